"""A corrupted registry never stops the worker: the last good model keeps scoring, a broken
champion at start-up gives way to the newest valid version or the rules, and promote
refuses what the worker would refuse."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from leadscore.model.exceptions import ModelIntegrityError
from leadscore.model.integrity import write_checksums
from leadscore.model.registry import CHAMPION_FILE, Registry
from leadscore.streamer.metrics import Metrics
from leadscore.streamer.models import ModelHolder
from tests.fakes import CORRUPTIONS, corrupted_copy, meta, truncate, writer


def point_champion(root: Path, raw: bytes) -> None:
    (root / CHAMPION_FILE).write_bytes(raw)


def holder(root: Path) -> tuple[ModelHolder, Metrics]:
    metrics = Metrics.create(CollectorRegistry())
    return ModelHolder(root, metrics=metrics), metrics


def test_each_corruption_keeps_the_last_good_model_and_says_so(tmp_path: Path) -> None:
    Registry(tmp_path).save("good", writer("good"), promote=True)
    h, m = holder(tmp_path)
    h.start()
    assert h.current.version == "good" and h.problem is None
    for name, corrupt in CORRUPTIONS.items():
        corrupted_copy(tmp_path, "good", name, corrupt)
        point_champion(tmp_path, f"{name}\n".encode())
        assert h.refresh() is False, name
        assert h.current.version == "good", name
        assert h.problem is not None and name in h.problem, (name, h.problem)
        assert m.registry.get_sample_value("leadscore_model_degraded") == 1
    point_champion(tmp_path, b"\xff\xfe\x00good")
    assert h.refresh() is False and h.current.version == "good"
    assert h.problem is not None and "unreadable" in h.problem
    assert m.registry.get_sample_value("leadscore_model_load_failures_total") == len(CORRUPTIONS)
    # Pointing back at the good model clears the problem.
    point_champion(tmp_path, b"good\n")
    h.refresh()
    assert h.problem is None and m.registry.get_sample_value("leadscore_model_degraded") == 0


def test_a_failed_champion_is_not_tried_again_until_its_files_change(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.save("good", writer("good"), promote=True)
    corrupted_copy(tmp_path, "good", "bad", truncate(0.5))
    h, m = holder(tmp_path)
    h.start()
    point_champion(tmp_path, b"bad\n")
    h.refresh()
    h.refresh()
    assert m.registry.get_sample_value("leadscore_model_load_failures_total") == 1
    # Repaired in place (the good files copied back): loaded at the next refresh.
    shutil.copy(tmp_path / "good" / "model.txt", tmp_path / "bad" / "model.txt")
    write_checksums(tmp_path / "bad")
    assert h.refresh() is True and h.current.version == "bad" and h.problem is None


def test_a_broken_champion_at_start_falls_back_to_the_newest_valid_version(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.save("old", writer("old", "2026-01-01"))
    reg.save("newer", writer("newer", "2026-02-01"))
    corrupted_copy(tmp_path, "newer", "newest", truncate(0.99, resum=True))
    point_champion(tmp_path, b"newest\n")
    h, _m = holder(tmp_path)
    h.start()
    assert h.current.version == "newer"
    assert h.problem is not None and "newest" in h.problem and "newer" in h.problem


def test_with_no_valid_version_the_worker_starts_on_the_rules(tmp_path: Path) -> None:
    Registry(tmp_path).save("only", writer("only"))
    corrupted_copy(tmp_path, "only", "bad", meta([]))
    shutil.rmtree(tmp_path / "only")
    point_champion(tmp_path, b"bad\n")
    h, _m = holder(tmp_path)
    h.start()
    assert h.current.version.startswith("rules")
    assert h.problem is not None and "rules" in h.problem


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_promote_refuses_what_a_worker_would_refuse(tmp_path: Path, name: str) -> None:
    reg = Registry(tmp_path)
    reg.save("good", writer("good"), promote=True)
    corrupted_copy(tmp_path, "good", name, CORRUPTIONS[name])
    with pytest.raises(ModelIntegrityError):
        reg.promote(name)
    assert reg.champion() == "good"


def test_a_model_over_features_the_worker_does_not_compute_is_refused(tmp_path: Path) -> None:
    """A model trained on a CRM table's columns can't score the stream: kept out, said so."""
    reg = Registry(tmp_path)
    reg.save("good", writer("good"), promote=True)
    h, _ = holder(tmp_path)
    h.start()

    def table_model(d: Path) -> None:
        writer("table")(d)
        meta_path = d / "meta.json"
        m = json.loads(meta_path.read_text())
        m["features"] = [{"name": "Total Time Spent", "kind": "numeric"}, m["features"][1]]
        meta_path.write_text(json.dumps(m))

    reg.save("table", table_model)
    point_champion(tmp_path, b"table\n")
    assert h.refresh() is False
    assert h.current.version == "good"
    assert h.problem is not None and "does not compute" in h.problem
