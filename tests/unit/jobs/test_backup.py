"""The backup's model registry and offsets file, without services: a registry copied out and
restored (idempotent, checked against the manifest, conflicts refused), and the offsets file
checked against the deployment it is replayed into."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from leadscore.cli import main
from leadscore.features.state import StateStatus
from leadscore.jobs.backup import (
    FORMAT,
    MANIFEST,
    BackupError,
    BackupOffsets,
    FileEntry,
    backup_registry,
    read_offsets,
    verify_backup,
)
from leadscore.jobs.rebuild import RebuildError, check_base_state
from leadscore.jobs.restore import restore_registry
from leadscore.model.registry import Registry
from leadscore.settings import Settings
from tests.fakes import writer


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry (two versions, a shadow, a decision) and its backup, made once: every
    promotion loads the model in a child process, which takes a while."""
    root = tmp_path_factory.mktemp("source")
    reg = Registry(root / "models")
    reg.save("v1", writer("v1", "2026-01-01"), promote=True)
    reg.save("v2", writer("v2", "2026-01-02"), promote=True)
    reg.set_shadow("v1")
    reg.record_decision({"version": "v2", "outcome": "promoted"})
    dest = root / "bk"
    dest.mkdir()
    files: list[FileEntry] = []
    backup_registry(reg, dest, files, lambda _m: None)
    manifest = {
        "format": FORMAT,
        "started_at": "2026-12-07T00:00:00Z",
        "files": [asdict(f) for f in files],
    }
    (dest / MANIFEST).write_text(json.dumps(manifest))
    return root


@pytest.fixture
def work(source: Path, tmp_path: Path) -> Path:
    """A copy of the registry (``models``) and its backup (``bk``) this test may change."""
    for name in ("models", "bk"):
        shutil.copytree(source / name, tmp_path / name)
    return tmp_path


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_a_registry_restored_from_its_backup_is_the_same_and_a_rerun_changes_nothing(
    work: Path,
) -> None:
    before = _tree(work / "models")
    # The backup's models/ is itself a local registry, file for file.
    assert _tree(work / "bk" / "models") == before

    target = Registry(work / "restored")
    first = restore_registry(target, work / "bk")
    assert first.items("restored") == [
        "CHAMPION",
        "DECISIONS.jsonl",
        "HISTORY.jsonl",
        "SHADOW",
        "version v1",
        "version v2",
    ]
    assert _tree(work / "restored") == before
    assert target.champion() == "v2" and target.shadow() == "v1"
    target.verify("v2")  # checksums, meta.json and LightGBM loading it, as a worker does
    assert target.champion_stack() == ["v1", "v2"]

    again = restore_registry(target, work / "bk")
    assert again.items("restored") == [] and again.items("conflict") == []
    assert again.count("unchanged") == 6
    assert _tree(work / "restored") == before


def test_a_restore_cut_short_is_finished_by_running_it_again(work: Path) -> None:
    target = Registry(work / "restored")
    target.import_version("v1", work / "bk" / "models" / "v1")  # as if it stopped here
    report = restore_registry(target, work / "bk")
    assert report.actions["version v1"] == "unchanged"
    assert report.actions["version v2"] == "restored"
    assert _tree(work / "restored") == _tree(work / "models")


def test_a_registry_that_went_on_keeps_its_newer_records_and_pointers_need_force(
    work: Path,
) -> None:
    reg = Registry(work / "models")
    reg.rollback()  # after the backup: the champion is v1 again, HISTORY has one more record
    dry = restore_registry(reg, work / "bk", dry_run=True)
    assert dry.items("conflict") == ["CHAMPION"]
    assert dry.items("kept") == ["HISTORY.jsonl"]
    with pytest.raises(BackupError, match="CHAMPION"):
        restore_registry(reg, work / "bk")
    assert reg.champion() == "v1"
    forced = restore_registry(reg, work / "bk", force=True)
    assert forced.items("restored") == ["CHAMPION"]
    assert reg.champion() == "v2"


def test_a_damaged_backup_or_a_changed_version_writes_nothing(work: Path) -> None:
    model = work / "bk" / "models" / "v2" / "model.txt"
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 2])
    with pytest.raises(BackupError, match="models/v2/model.txt: does not match"):
        restore_registry(Registry(work / "restored"), work / "bk")
    assert not (work / "restored").exists() or _tree(work / "restored") == {}
    model.write_bytes(good)

    other = Registry(work / "other")
    other.save("v2", writer("v2", "another model under the same name"))
    with pytest.raises(BackupError, match="versions are immutable"):
        restore_registry(other, work / "bk")
    assert [v.version for v in other.list()] == ["v2"] and other.champion() is None

    with pytest.raises(BackupError, match="no manifest.json"):
        verify_backup(work / "models")


def test_restore_models_cli_json(work: Path, capsys) -> None:
    args = ["restore-models", str(work / "bk"), "--model-dir", str(work / "r"), "--json"]
    assert main([*args, "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] and len(dry["restored"]) == 6
    assert not (work / "r").exists()
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["conflicts"] == []
    assert Registry(work / "r").champion() == "v2"


def _offsets_file(tmp_path: Path, s: Settings, **over: object) -> Path:
    data = BackupOffsets(
        s.app_id, "g1", {(s.topic("web"), 0): 12, (s.topic("crm"), 3): 0}, "now"
    ).as_json()
    data.update(over)
    path = tmp_path / "offsets.json"
    path.write_text(json.dumps(data))
    return path


def test_the_offsets_file_round_trips_and_must_name_this_deployments_topics(
    tmp_path: Path,
) -> None:
    s = Settings(topic_prefix="p.", app_id="ls-a")
    path = _offsets_file(tmp_path, s)
    got = read_offsets(s, tmp_path)  # the backup's directory will do
    assert got.offsets == {("p.leads.web", 0): 12, ("p.leads.crm", 3): 0}
    assert got.generation == "g1" and got.group == "ls-a"
    with pytest.raises(BackupError, match="LEADSCORE_TOPIC_PREFIX"):
        read_offsets(Settings(app_id="ls-a"), path)
    with pytest.raises(BackupError, match="LEADSCORE_APP_ID"):
        read_offsets(Settings(topic_prefix="p.", app_id="ls-b"), path)
    _offsets_file(tmp_path, s, offsets={"p.leads.web": 3})
    with pytest.raises(BackupError, match="not a backup's offsets file"):
        read_offsets(s, path)


def test_a_catch_up_needs_redis_to_hold_the_snapshots_state() -> None:
    check_base_state(StateStatus("g1", "ready"), "g1")
    with pytest.raises(RebuildError, match="holds no feature state"):
        check_base_state(StateStatus(None, None), "g1")
    with pytest.raises(RebuildError, match="not the backup's g1"):
        check_base_state(StateStatus("g2", "rebuilding", note="rebuild from ... started"), "g1")
    check_base_state(StateStatus("g2", "rebuilding"), "g1", force=True)
