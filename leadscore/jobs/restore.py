"""``leadscore restore-models``: a backup's model registry (:mod:`leadscore.jobs.backup`) put
back into a registry, on a folder or an object store.

Idempotent: what the registry already holds, the same, is left as it is, so a restore that
was cut short is finished by running it again. Every model file is checked against the
manifest before anything is written. Versions are immutable: one that exists with other
files is a conflict, always refused. A pointer (``CHAMPION``, ``SHADOW``, ``EXPERIMENT``)
that differs is a conflict unless ``force`` (the backup's wins). A log the registry holds
more of (it went on after the backup) is kept; one that lacks some of the backup's records
gets them appended (``force``: also when the two diverged). Conflicts stop the restore
before it writes anything. Versions go first and the pointers last: a worker sees a champion
only once its version is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from leadscore.jobs.backup import (
    MODELS_DIR,
    BackupError,
    FileEntry,
    file_sha256,
    read_manifest,
    verify_backup,
)
from leadscore.model.registry import LOG_FILES, POINTER_FILES, Registry

Progress = Callable[[str], None]
Action = Literal["restored", "unchanged", "conflict", "kept"]


@dataclass
class RestoreReport:
    registry: str
    dry_run: bool
    actions: dict[str, Action] = field(default_factory=dict)
    """What was done (in a dry run: would be) to each version, log and pointer."""
    notes: list[str] = field(default_factory=list)

    def count(self, action: Action) -> int:
        return sum(1 for a in self.actions.values() if a == action)

    def items(self, action: Action) -> list[str]:
        return sorted(k for k, a in self.actions.items() if a == action)

    def as_dict(self) -> dict[str, Any]:
        return {
            "registry": self.registry,
            "dry_run": self.dry_run,
            "restored": self.items("restored"),
            "unchanged": self.count("unchanged"),
            "kept": self.items("kept"),
            "conflicts": self.items("conflict"),
            "notes": self.notes,
        }


@dataclass
class _Plan:
    versions: list[str] = field(default_factory=list)
    logs: dict[str, list[bytes]] = field(default_factory=dict)
    pointers: dict[str, bytes] = field(default_factory=dict)


def restore_registry(
    reg: Registry,
    src: Path,
    *,
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> RestoreReport:
    """Put the registry of the backup in ``src`` into ``reg`` (see the module docstring)."""
    say = progress or (lambda _msg: None)
    manifest = read_manifest(src)
    entries = verify_backup(src, {"model", "pointer", "log"})
    root = src / MODELS_DIR
    report = RestoreReport(reg.location, dry_run)
    plan = _Plan()
    sums = _version_sums(entries)
    say(f"backup of {manifest['started_at']}: {len(sums)} model versions, checksums match")
    _plan_versions(reg, sums, plan, report)
    _plan_logs(reg, root, force, plan, report)
    _plan_pointers(reg, root, force, plan, report)
    if dry_run:
        return report
    if report.count("conflict"):
        raise BackupError(
            f"restoring into {reg.location} would overwrite: {'; '.join(report.notes)}"
        )
    for version in plan.versions:
        say(f"  restoring version {version}")
        reg.import_version(version, root / version)
    for name, lines in plan.logs.items():
        reg.append_lines(name, lines)
    for name, data in plan.pointers.items():
        reg.restore_pointer(name, data)
    say(f"restored {report.count('restored')} items, {report.count('unchanged')} unchanged")
    return report


def _version_sums(entries: list[FileEntry]) -> dict[str, dict[str, str]]:
    """Version -> {file name: sha256} from the manifest's model files."""
    out: dict[str, dict[str, str]] = {}
    for e in entries:
        if e.kind == "model":
            _models, version, name = e.path.split("/", 2)
            out.setdefault(version, {})[name] = e.sha256
    return out


def _plan_versions(
    reg: Registry, sums: dict[str, dict[str, str]], plan: _Plan, report: RestoreReport
) -> None:
    listed = {v.version for v in reg.list()}
    for version, files in sorted(sums.items()):
        key = f"version {version}"
        if version not in listed:
            report.actions[key] = "restored"
            plan.versions.append(version)
            continue
        local = reg.local(version)
        have = {f.name: file_sha256(f) for f in sorted(local.iterdir()) if f.is_file()}
        if have == files:
            report.actions[key] = "unchanged"
        else:
            report.actions[key] = "conflict"
            report.notes.append(
                f"{version} exists in {reg.location} with other files: versions are "
                "immutable, remove it by hand to restore the backup's"
            )


def _plan_logs(reg: Registry, root: Path, force: bool, plan: _Plan, report: RestoreReport) -> None:
    for name in LOG_FILES:
        if not (root / name).is_file():
            continue
        ours = [line for line in (root / name).read_bytes().split(b"\n") if line.strip()]
        theirs = reg.log_lines(name)
        if theirs == ours:
            report.actions[name] = "unchanged"
        elif theirs[: len(ours)] == ours:
            report.actions[name] = "kept"  # the registry went on after the backup
        elif ours[: len(theirs)] == theirs:
            report.actions[name] = "restored"
            plan.logs[name] = ours[len(theirs) :]
        elif force:
            report.actions[name] = "restored"
            have = set(theirs)
            plan.logs[name] = [line for line in ours if line not in have]
        else:
            report.actions[name] = "conflict"
            report.notes.append(
                f"{name} in {reg.location} diverged from the backup's (--force appends the "
                "backup's records it lacks)"
            )


def _plan_pointers(
    reg: Registry, root: Path, force: bool, plan: _Plan, report: RestoreReport
) -> None:
    for name in POINTER_FILES:
        if not (root / name).is_file():
            continue
        data = (root / name).read_bytes()
        current = reg.pointer_bytes(name)
        if current == data:
            report.actions[name] = "unchanged"
        elif current is None or force:
            report.actions[name] = "restored"
            plan.pointers[name] = data
        else:
            report.actions[name] = "conflict"
            report.notes.append(
                f"{name} in {reg.location} is {_text(current)!r}, the backup's "
                f"{_text(data)!r} (--force: the backup's)"
            )


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()
