"""The CLI end to end without a broker: simulate -> features / train --events -> models."""

from __future__ import annotations

import json

import orjson
import pytest

from leadscore.cli import build_parser, main, parse_duration_ms
from leadscore.features.offline import read_events, replay
from leadscore.schemas.validation import Event


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in (
        "demo",
        "worker",
        "simulate",
        "replay",
        "train",
        "predict",
        "features",
        "models",
        "forget",
    ):
        assert cmd in out


def test_predict_reasons_is_a_count(capsys):
    args = build_parser().parse_args(["predict", "--model", "m", "--data", "d", "--out", "o"])
    assert args.reasons == 5
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--model", "m", "--data", "d", "--out", "o", "--reasons", "-1"])
    assert exc.value.code == 2
    assert "not a count" in capsys.readouterr().err


def test_durations_parse():
    assert parse_duration_ms("30d") == 30 * 86_400_000
    assert parse_duration_ms("90m") == 90 * 60_000
    with pytest.raises(Exception, match="not a duration"):
        parse_duration_ms("soon")


def test_worker_without_bootstrap_says_what_to_set(monkeypatch, capsys):
    monkeypatch.delenv("LEADSCORE_KAFKA_BOOTSTRAP", raising=False)
    # A runtime failure exits 1 (2 is for usage errors, see the next test).
    assert main(["worker"]) == 1
    assert "LEADSCORE_KAFKA_BOOTSTRAP" in capsys.readouterr().err


def test_exit_codes_tell_usage_errors_from_failures(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--horizon", "soon"])
    assert exc.value.code == 2
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert "exit codes: 0 done, 1 the command failed" in capsys.readouterr().out


def test_version_is_printed(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("leadscore ")


def test_features_command_prints_the_offline_replay(tmp_path, capsys):
    hist = tmp_path / "h.jsonl"
    assert main(["simulate", "--leads", "40", "--events", "1500", "--out", str(hist)]) == 0
    with hist.open("ab") as fh:
        fh.write(b"not json\n")
    capsys.readouterr()
    assert main(["features", "--events", str(hist)]) == 0
    captured = capsys.readouterr()
    lines = [orjson.loads(line) for line in captured.out.splitlines()]
    assert "skipped (not_json" in captured.err
    events = [e for _, e in read_events(hist) if isinstance(e, Event)]
    want = {k: v.features() for k, v in replay(events).items()}
    assert {line["lead_id"]: line["features"] for line in lines} == want
    assert len(lines) == 40


def test_train_from_event_history_beats_the_rules(tmp_path, capsys):
    """Issue 3's bar: 3,000 leads / ~120,000 events, AUC at least 0.05 above the rules."""
    hist = tmp_path / "hist.jsonl"
    assert main(["simulate", "--leads", "3000", "--events", "120000", "--out", str(hist)]) == 0
    capsys.readouterr()
    models = tmp_path / "models"
    rc = main(["train", "--events", str(hist), "--horizon", "30d", "--out", str(models), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["auc"] - report["baseline_auc"] >= 0.05, report
    assert report["metrics"]["split"] == "time"
    assert report["metrics"]["test"]["calibration_error"] < 0.08
    assert main(["models", "list", "--model-dir", str(models)]) == 0
    listing = capsys.readouterr().out
    assert report["version"] in listing and listing.startswith("*")


def test_parser_rejects_unknown_command():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["frobnicate"])


def test_spawned_commands_ignore_a_leadscore_folder_in_the_current_directory(tmp_path):
    """Workers are spawned with ``python -P -m leadscore``: a folder named leadscore in the
    current directory (Faust's data directory once was one, under /tmp) would otherwise be
    imported as a namespace package in place of the installed one."""
    import subprocess
    import sys

    (tmp_path / "leadscore").mkdir()
    args = [sys.executable, "-P", "-m", "leadscore", "--version"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("leadscore ")
