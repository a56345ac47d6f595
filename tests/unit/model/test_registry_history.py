"""Champion history, rollback and the decision log of the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadscore.cli import main
from leadscore.model.exceptions import RegistryError
from leadscore.model.registry import HISTORY_FILE, Registry
from tests.fakes import save_worker_model


def test_rollback_walks_back_the_champions_in_force(tmp_path: Path) -> None:
    for v in ("a", "b", "c"):
        save_worker_model(tmp_path, v)
    reg = Registry(tmp_path)
    assert reg.champion_stack() == ["a", "b", "c"]
    assert reg.rollback() == ("c", "b")
    assert reg.rollback() == ("b", "a")
    assert reg.champion() == "a"
    with pytest.raises(RegistryError, match="no earlier champion"):
        reg.rollback()
    # A promotion after rollbacks starts a new line: rolling it back returns to "a".
    reg.promote("c")
    assert reg.rollback() == ("c", "a")
    actions = [h["action"] for h in reg.history()]
    assert actions == [
        "promote",
        "promote",
        "promote",
        "rollback",
        "rollback",
        "promote",
        "rollback",
    ]


def test_a_torn_history_line_is_skipped(tmp_path: Path) -> None:
    save_worker_model(tmp_path, "a")
    save_worker_model(tmp_path, "b")
    with open(tmp_path / HISTORY_FILE, "a", encoding="utf-8") as fh:
        fh.write('{"version": "c", "act')  # a crash mid-append
    reg = Registry(tmp_path)
    assert reg.champion_stack() == ["a", "b"]
    assert reg.rollback() == ("b", "a")


def test_rollback_from_a_hand_written_pointer(tmp_path: Path) -> None:
    save_worker_model(tmp_path, "a")
    save_worker_model(tmp_path, "b", promote=False)
    (tmp_path / "CHAMPION").write_text("b\n")  # written by hand, not in the history
    assert Registry(tmp_path).rollback() == ("b", "a")


def test_models_cli_history_decisions_and_rollback(tmp_path: Path, capsys) -> None:
    save_worker_model(tmp_path, "a")
    save_worker_model(tmp_path, "b")
    Registry(tmp_path).record_decision({"version": "b", "outcome": "forced"})
    d = ["--model-dir", str(tmp_path)]
    assert main(["models", "rollback", *d]) == 0
    assert "a is the champion again" in capsys.readouterr().err
    assert main(["models", "history", *d]) == 0
    assert [line.count('"rollback"') for line in capsys.readouterr().out.splitlines()] == [0, 0, 1]
    assert main(["models", "decisions", *d]) == 0
    assert '"outcome":"forced"' in capsys.readouterr().out
    assert main(["models", "list", "--json", *d]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and '"champion":true' in listed[0]
    assert main(["models", "rollback", *d]) == 1  # nothing before "a"
    assert "no earlier champion" in capsys.readouterr().err


def test_shadow_and_experiment_pointers(tmp_path: Path, capsys) -> None:
    save_worker_model(tmp_path, "a")
    save_worker_model(tmp_path, "b", promote=False)
    reg = Registry(tmp_path)
    d = ["--model-dir", str(tmp_path)]
    assert main(["models", "shadow", "b", *d]) == 0
    assert reg.shadow() == "b"
    assert main(["models", "shadow", "--off", *d]) == 0
    assert reg.shadow() is None
    assert main(["models", "ab", "b", "--share", "0.1", *d]) == 0
    exp = reg.experiment()
    assert exp is not None and exp.version == "b" and exp.share == 0.1
    # The same command again is a no-op; another share is refused, the split stays.
    assert main(["models", "ab", "b", "--share", "0.1", *d]) == 0
    assert reg.experiment() == exp
    capsys.readouterr()
    assert main(["models", "ab", "b", "--share", "0.2", *d]) == 1
    assert "can't change" in capsys.readouterr().err
    assert reg.experiment() == exp
    assert main(["models", "ab", "b", "--share", "0.1", "--by", "nope", *d]) == 1
    assert main(["models", "ab", "--stop", *d]) == 0
    assert reg.experiment() is None
    assert main(["models", "ab", "b", "--share", "0.2", *d]) == 0
    new = reg.experiment()
    assert new is not None and new.salt != exp.salt and new.share == 0.2
    assert reg.champion_stack() == ["a"]  # side pointers are not champion changes
