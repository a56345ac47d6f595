"""``leadscore backup``: the feature state's Redis snapshot, the offsets it is consistent
with, and the model registry, in one directory (``leadscore restore-models`` puts the
registry back: :mod:`leadscore.jobs.restore`).

Layout of a backup::

    DIR/
      offsets.json     the worker group's committed offsets of every input partition, read
                       before the snapshot, and the feature state's generation
      redis/dump.rdb   the snapshot (on a Redis Cluster, one per master: redis/HOST-PORT.rdb)
      models/          the registry as a local registry has it: CHAMPION, SHADOW,
                       EXPERIMENT, HISTORY.jsonl, DECISIONS.jsonl, one directory per version
      manifest.json    written last: version, time, settings, every file's size and sha256

Why the offsets are read first: a worker writes a batch's features to Redis before it
commits the batch's offsets, so a snapshot taken after the offsets were read holds every
event below them. Events above them may be in the snapshot or not; ``leadscore rebuild
--from-offsets-file DIR/offsets.json`` replays them onto the restored snapshot: the ones it
holds are recognised by their event ids and change nothing, the others are applied.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from leadscore import __version__
from leadscore.errors import LeadscoreError
from leadscore.features.state import StateMarker, StateStatus
from leadscore.infra.rdb import RedisNode, Snapshot, fetch_snapshot, redis_nodes
from leadscore.infra.redis import redis_client
from leadscore.infra.topics import (
    INPUT_TOPICS,
    committed_offsets,
    end_offsets,
    input_partitions,
)
from leadscore.model.integrity import file_sha256
from leadscore.model.registry import LOG_FILES, POINTER_FILES, Registry
from leadscore.settings import Settings

MANIFEST = "manifest.json"
OFFSETS = "offsets.json"
REDIS_DIR = "redis"
MODELS_DIR = "models"
#: Bumped when the layout above changes in a way an older ``restore-models`` misreads.
FORMAT = 1

Progress = Callable[[str], None]
Kind = Literal["offsets", "redis", "model", "pointer", "log"]


class BackupError(LeadscoreError):
    """Raised when a backup can't be taken (a non-empty directory, a rebuild under way, a lost
    state) or a backup is unusable (no manifest, a file that doesn't match its checksum)."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    """Relative to the backup directory, ``/``-separated."""
    size: int
    sha256: str
    kind: Kind


def _entry(root: Path, path: Path, kind: Kind) -> FileEntry:
    rel = path.relative_to(root).as_posix()
    return FileEntry(rel, path.stat().st_size, file_sha256(path), kind)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _without_password(url: str) -> str:
    """``url`` with its password masked (the manifest is no place for it).

    >>> _without_password("redis://:s3cret@cache:6379/0")
    'redis://:***@cache:6379/0'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# --- offsets.json -------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupOffsets:
    """What ``offsets.json`` holds: where the replay onto the restored snapshot starts."""

    group: str
    generation: str | None
    """The feature state's generation when the backup was taken (the snapshot's)."""
    offsets: dict[tuple[str, int], int]
    read_at: str = ""
    ends: dict[tuple[str, int], int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "group": self.group,
            "generation": self.generation,
            "read_at": self.read_at,
            "offsets": {f"{t}:{p}": o for (t, p), o in sorted(self.offsets.items())},
            "ends": {f"{t}:{p}": o for (t, p), o in sorted(self.ends.items())},
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> BackupOffsets:
        try:
            offsets = {_topic_partition(k): int(v) for k, v in data["offsets"].items()}
            ends = {_topic_partition(k): int(v) for k, v in data.get("ends", {}).items()}
            generation = data["generation"]
            return cls(
                str(data["group"]),
                None if generation is None else str(generation),
                offsets,
                str(data.get("read_at", "")),
                ends,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BackupError(f"{where} is not a backup's offsets file: {exc!r}") from exc


def _topic_partition(key: str) -> tuple[str, int]:
    topic, _, part = key.rpartition(":")
    if not topic or not part.isdigit():
        raise ValueError(f"{key!r} is not TOPIC:PARTITION")
    return topic, int(part)


def read_offsets(settings: Settings, path: Path) -> BackupOffsets:
    """``offsets.json`` (``path`` may be the backup's directory), checked against the input
    topics of ``settings``: a backup of another deployment (another topic prefix or app id)
    would replay the wrong topics."""
    if path.is_dir():
        path = path / OFFSETS
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise BackupError(f"can't read {path}: {exc}") from exc
    got = BackupOffsets.from_json(data, str(path))
    inputs = {settings.topic(s) for s in INPUT_TOPICS}
    foreign = sorted({t for t, _ in got.offsets} - inputs)
    if foreign:
        raise BackupError(
            f"{path} names topics {', '.join(foreign)}, which are not this deployment's input "
            f"topics ({', '.join(sorted(inputs))}): check LEADSCORE_TOPIC_PREFIX"
        )
    if got.group != settings.app_id:
        raise BackupError(
            f"{path} holds the offsets of consumer group {got.group!r}, not this deployment's "
            f"{settings.app_id!r}: check LEADSCORE_APP_ID"
        )
    return got


# --- taking a backup ----------------------------------------------------------------------


def _prepare(dest: Path, force: bool) -> None:
    if dest.exists() and not dest.is_dir():
        raise BackupError(f"{dest} exists and is not a directory")
    if dest.exists() and any(dest.iterdir()):
        if not force:
            raise BackupError(f"{dest} is not empty (give --force to replace a backup in it)")
        # Only what a backup writes: a wrong DIR given with --force loses nothing else.
        for name in (MANIFEST, OFFSETS):
            (dest / name).unlink(missing_ok=True)
        for name in (REDIS_DIR, MODELS_DIR):
            shutil.rmtree(dest / name, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)


async def _state_status(settings: Settings) -> StateStatus:
    client = redis_client(settings)
    try:
        return await StateMarker(client, cluster=settings.redis_cluster).status()
    finally:
        await client.aclose()


def state_status(settings: Settings) -> StateStatus:
    """The feature state's status hash (generation, ready or rebuilding)."""
    return asyncio.run(_state_status(settings))


def _check_state(status: StateStatus, offsets: dict[tuple[str, int], int]) -> None:
    if status.status == "rebuilding":
        raise BackupError(
            f"the feature state is being rebuilt (generation {status.generation}, since "
            f"{status.updated_at}): its snapshot would be partial; back up once it is done"
        )
    if status.generation is None and any(offsets.values()):
        raise BackupError(
            "Redis holds no feature state, but the worker group has committed offsets: the "
            "state was lost; run `leadscore rebuild` before taking a backup"
        )


def run_backup(
    settings: Settings,
    dest: Path,
    *,
    force: bool = False,
    redis: bool = True,
    models: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Take a backup into ``dest`` (see the module docstring); returns the manifest."""
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    started = _now()
    _prepare(dest, force)
    files: list[FileEntry] = []

    partitions = input_partitions(settings)
    if not partitions:
        raise BackupError("the input topics don't exist: nothing was ever scored here")
    before = state_status(settings)
    say(f"reading the committed offsets of group {settings.app_id} ({len(partitions)} partitions)")
    offsets = BackupOffsets(
        settings.app_id,
        before.generation,
        committed_offsets(settings, partitions),
        _now(),
        end_offsets(settings, partitions),
    )
    _check_state(before, offsets.offsets)
    lag = sum(max(offsets.ends[tp] - off, 0) for tp, off in offsets.offsets.items())
    say(f"  {sum(offsets.offsets.values()):,} events committed, {lag:,} not yet")
    (dest / OFFSETS).write_text(json.dumps(offsets.as_json(), indent=2) + "\n")
    files.append(_entry(dest, dest / OFFSETS, "offsets"))

    snapshots: list[dict[str, Any]] = []
    if redis:
        snapshots = _snapshots(settings, dest, files, say)
        after = state_status(settings)
        if after.generation != before.generation:
            raise BackupError(
                f"the feature state changed generation while the snapshot was taken "
                f"({before.generation} -> {after.generation}: a rebuild ran); take the "
                "backup again"
            )
    registry: dict[str, Any] = {}
    if models:
        registry = backup_registry(Registry(settings.registry_root), dest, files, say)

    manifest = {
        "format": FORMAT,
        "leadscore_version": __version__,
        "started_at": started,
        "finished_at": _now(),
        "seconds": round(time.monotonic() - t0, 2),
        "settings": {
            "app_id": settings.app_id,
            "consumer_group": settings.app_id,
            "topic_prefix": settings.topic_prefix,
            "input_topics": sorted({t for t, _ in partitions}),
            "redis_url": _without_password(settings.require_redis()),
            "redis_cluster": settings.redis_cluster,
            "model_registry": str(settings.registry_root) if models else None,
        },
        "state": {"generation": before.generation, "status": before.status},
        "redis": snapshots,
        "models": registry,
        "files": [asdict(f) for f in files],
    }
    tmp = dest / (MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(dest / MANIFEST)
    size = sum(f.size for f in files)
    say(f"backup in {dest}: {len(files)} files, {size / 2**20:,.1f} MiB, {manifest['seconds']} s")
    return manifest


def _snapshots(
    settings: Settings, dest: Path, files: list[FileEntry], say: Progress
) -> list[dict[str, Any]]:
    """One snapshot per server, fetched side by side: each master of a cluster holds its
    own slots' state, and a master may wait seconds before it starts sending."""
    nodes = redis_nodes(settings)
    (dest / REDIS_DIR).mkdir()

    def one(node: RedisNode) -> Snapshot:
        name = "dump.rdb" if not settings.redis_cluster else node.name.replace(":", "-") + ".rdb"
        say(f"fetching the snapshot of Redis {node.name}")
        snap = fetch_snapshot(node, dest / REDIS_DIR / name, say)
        say(f"  {node.name}: {snap.size / 2**20:,.1f} MiB in {snap.seconds:.1f} s")
        return snap

    with ThreadPoolExecutor(max_workers=min(len(nodes), 8)) as pool:
        snaps = list(pool.map(one, nodes))
    out = []
    for node, snap in zip(nodes, snaps, strict=True):
        entry = FileEntry(snap.path.relative_to(dest).as_posix(), snap.size, snap.sha256, "redis")
        files.append(entry)
        out.append(
            {
                "node": node.name,
                "node_id": node.node_id or None,
                "slots": [list(r) for r in node.slots] or None,
                "file": entry.path,
                "size": snap.size,
                "sha256": snap.sha256,
                "diskless": snap.diskless,
                "seconds": round(snap.seconds, 2),
            }
        )
    return out


def backup_registry(
    reg: Registry, dest: Path, files: list[FileEntry], say: Progress
) -> dict[str, Any]:
    """Copy the registry into ``dest/models`` laid out as a local registry. Pointers are
    read first: a version is complete before a pointer names it, so every version a copied
    pointer names is among those copied next."""
    root = dest / MODELS_DIR
    root.mkdir()
    pointers: dict[str, str] = {}
    for name in POINTER_FILES:
        data = reg.pointer_bytes(name)
        if data is not None:
            (root / name).write_bytes(data)
            files.append(_entry(dest, root / name, "pointer"))
            pointers[name] = data.decode("utf-8", "replace").strip()
    versions = [v.version for v in reg.list()]
    say(f"copying the model registry {reg.location}: {len(versions)} versions")
    for version in versions:
        src = reg.local(version)
        (root / version).mkdir()
        for f in sorted(src.iterdir()):
            if f.is_file():
                shutil.copyfile(f, root / version / f.name)
                files.append(_entry(dest, root / version / f.name, "model"))
    for name in LOG_FILES:
        lines = reg.log_lines(name)
        if lines:
            (root / name).write_bytes(b"".join(line + b"\n" for line in lines))
            files.append(_entry(dest, root / name, "log"))
    champion = pointers.get("CHAMPION")
    if champion is not None and champion not in versions:
        say(f"  warning: the champion {champion} is not among the registry's versions")
    return {"location": reg.location, "versions": versions, "pointers": pointers}


# --- reading and checking a backup --------------------------------------------------------


def read_manifest(src: Path) -> dict[str, Any]:
    path = src / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BackupError(
            f"{src} has no {MANIFEST}: not a backup, or one that did not finish"
        ) from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"can't read {path}: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{path} is of backup format {manifest.get('format')!r}; this release reads {FORMAT}"
        )
    return manifest


def verify_backup(src: Path, kinds: set[str] | None = None) -> list[FileEntry]:
    """Check the size and sha256 of every file the manifest lists (of ``kinds``); raise
    :class:`BackupError` naming each one that is missing or differs."""
    entries = [FileEntry(**e) for e in read_manifest(src)["files"]]
    entries = [e for e in entries if kinds is None or e.kind in kinds]
    bad = []
    for e in entries:
        path = src / e.path
        if not path.is_file():
            bad.append(f"{e.path}: missing")
        elif path.stat().st_size != e.size or file_sha256(path) != e.sha256:
            bad.append(f"{e.path}: does not match its checksum")
    if bad:
        raise BackupError(f"the backup in {src} is damaged: " + "; ".join(bad))
    return entries
