"""The event archive's format: every valid input event, as date-partitioned Parquet.

Layout (a local directory or any fsspec URL, e.g. ``s3://bucket/prefix``)::

    <root>/source=web/date=2026-12-06/part-<topic>-<partition>-<first>-<last>.parquet

``date`` is the event's own date (UTC), so ``--since/--until`` read only the partitions
they need. ``first``/``last`` are the Kafka offsets of the flush that wrote the file: a
flush that is repeated after a crash (its offsets were not committed yet) writes the same
events again, and :func:`read_archive` keeps one copy of each event id. Each file appears
whole or not at all: a local file is written under a temporary name, synced and renamed;
an object store's put is atomic.

Each row keeps the event as it was sent, redacted as the worker redacts it (``value``; no
raw PII at rest, ``leadscore.schemas.privacy``), beside the columns a query needs, so
training from the archive gives the same events as training from a JSONL file of the same
messages.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from leadscore.errors import LeadscoreError
from leadscore.features.definitions import DAY_MS
from leadscore.schemas.validation import Event, Invalid

COLUMNS = (
    "event_id",
    "lead_id",
    "source",
    "type",
    "ts_ms",
    "value",
    "topic",
    "partition",
    "offset",
    "archived_at_ms",
)
_PART = re.compile(r"part-(?P<topic>.+)-(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$")
_DATE = re.compile(r"date=(\d{4}-\d{2}-\d{2})")


class ArchiveError(LeadscoreError):
    """Raised when the archive can't be read or written (missing extra, bad URL, I/O)."""


@dataclass(frozen=True, slots=True)
class ArchivedEvent:
    """One valid event and where it came from."""

    event: Event
    value: bytes
    topic: str
    partition: int
    offset: int


def _libs() -> tuple[Any, Any, Any]:
    try:
        import fsspec
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ArchiveError(
            "the event archive needs the parquet extra: pip install 'leadscore[parquet]' "
            "(and 'leadscore[s3]' for s3:// URLs)"
        ) from exc
    return fsspec, pa, pq


def open_root(root: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and the path of ``root`` in it."""
    fsspec, _, _ = _libs()
    try:
        # A fresh filesystem object: a cached one keeps the endpoint and credentials of the
        # environment it was made in.
        fs, path = fsspec.core.url_to_fs(root, skip_instance_cache=True, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise ArchiveError(f"can't open the archive at {root!r}: {exc}") from exc
    return fs, str(path).rstrip("/")


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def event_date(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d")


class ArchiveWriter:
    """Writes flushes of archived events as Parquet files, one per source, date and
    partition; a file is durable when :meth:`write` returns."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None) -> None:
        self.fs, self.base = open_root(root, storage_options)
        self.local = _is_local(self.fs)

    def write(self, records: Sequence[ArchivedEvent], now_ms: int) -> list[str]:
        """Write ``records``; returns the paths written."""
        _, pa, pq = _libs()
        span: dict[tuple[str, int], tuple[int, int]] = {}
        groups: dict[tuple[str, str, str, int], list[ArchivedEvent]] = {}
        for r in records:
            lo, hi = span.get((r.topic, r.partition), (r.offset, r.offset))
            span[(r.topic, r.partition)] = (min(lo, r.offset), max(hi, r.offset))
            key = (r.event.source, event_date(r.event.ts_ms), r.topic, r.partition)
            groups.setdefault(key, []).append(r)
        paths = []
        for (source, date, topic, partition), rows in sorted(groups.items()):
            first, last = span[(topic, partition)]
            directory = f"{self.base}/source={source}/date={date}"
            path = f"{directory}/part-{topic}-{partition}-{first:012d}-{last:012d}.parquet"
            table = pa.Table.from_pydict(_columns(rows, now_ms), schema=_schema(pa))
            self._put(directory, path, table, pq)
            paths.append(path)
        return paths

    def _put(self, directory: str, path: str, table: Any, pq: Any) -> None:
        _put_table(self.fs, self.local, directory, path, table, pq)


def _put_table(fs: Any, local: bool, directory: str, path: str, table: Any, pq: Any) -> None:
    """Write ``table`` to ``path`` whole or not at all (see the module's docstring)."""
    try:
        if local:
            os.makedirs(directory, exist_ok=True)
            tmp = f"{directory}/.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        else:
            with fs.open(path, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
    except OSError as exc:
        raise ArchiveError(f"can't write {path}: {exc}") from exc


def _schema(pa: Any) -> Any:
    return pa.schema(
        [
            ("event_id", pa.string()),
            ("lead_id", pa.string()),
            ("source", pa.string()),
            ("type", pa.string()),
            ("ts_ms", pa.int64()),
            ("value", pa.binary()),
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("archived_at_ms", pa.int64()),
        ]
    )


def _columns(rows: Sequence[ArchivedEvent], now_ms: int) -> dict[str, list[Any]]:
    return {
        "event_id": [r.event.event_id for r in rows],
        "lead_id": [r.event.lead_id for r in rows],
        "source": [r.event.source for r in rows],
        "type": [r.event.type for r in rows],
        "ts_ms": [r.event.ts_ms for r in rows],
        "value": [r.value for r in rows],
        "topic": [r.topic for r in rows],
        "partition": [r.partition for r in rows],
        "offset": [r.offset for r in rows],
        "archived_at_ms": [now_ms] * len(rows),
    }


def archive_files(
    root: str,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> tuple[Any, list[str]]:
    """The archive's Parquet files whose date partition may hold events in the window."""
    fs, base = open_root(root, storage_options)
    try:
        if not fs.exists(base):
            raise ArchiveError(f"there is no event archive at {root!r}")
        files = sorted(fs.glob(f"{base}/source=*/date=*/part-*.parquet"))
    except OSError as exc:
        raise ArchiveError(f"can't list the archive at {root!r}: {exc}") from exc
    lo = event_date(since_ms) if since_ms is not None else None
    # An event at until - 1 ms may sit in the partition of the day before ``until``.
    hi = event_date(until_ms) if until_ms is not None else None

    def wanted(path: str) -> bool:
        m = _DATE.search(path)
        if m is None:
            return False
        day = m.group(1)
        return (lo is None or day >= lo) and (hi is None or day <= hi)

    return fs, [f for f in files if wanted(f) and _PART.search(f)]


def read_archive(
    root: str,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    parse: Callable[[bytes], Event | Invalid],
    storage_options: dict[str, Any] | None = None,
) -> Iterator[tuple[str, int, int, Event]]:
    """Every archived event with ``since <= ts < until``, one per event id (the copy with the
    lowest topic/partition/offset), as ``(topic, partition, offset, event)`` in file order.

    ``parse`` turns a stored value back into an event (the same function that reads a JSONL
    history, so both give equal events).
    """
    _, _, pq = _libs()
    fs, files = archive_files(
        root, since_ms=since_ms, until_ms=until_ms, storage_options=storage_options
    )
    rows: dict[str, tuple[str, int, int, bytes]] = {}
    for path in files:
        try:
            with fs.open(path, "rb") as fh:
                table = pq.read_table(
                    fh, columns=["event_id", "ts_ms", "value", "topic", "partition", "offset"]
                )
        except (OSError, ValueError) as exc:
            raise ArchiveError(f"can't read {path}: {exc}") from exc
        cols = table.to_pydict()
        for eid, ts, value, topic, part, off in zip(
            cols["event_id"],
            cols["ts_ms"],
            cols["value"],
            cols["topic"],
            cols["partition"],
            cols["offset"],
            strict=True,
        ):
            if (since_ms is not None and ts < since_ms) or (
                until_ms is not None and ts >= until_ms
            ):
                continue
            seen = rows.get(eid)
            if seen is None or (topic, part, off) < seen[:3]:
                rows[eid] = (topic, part, off, value)
    for eid, (topic, part, off, value) in sorted(rows.items(), key=lambda kv: kv[1][:3]):
        ev = parse(value)
        if isinstance(ev, Event):
            yield topic, part, off, ev
        else:
            raise ArchiveError(f"archived event {eid!r} no longer parses: {ev.message}")


@dataclass(frozen=True, slots=True)
class ArchiveErasure:
    """What :func:`erase_from_archive` removed: rows per lead, and the files it rewrote or
    deleted (a file left empty is deleted)."""

    removed: dict[str, int]
    files_rewritten: int
    files_deleted: int
    files_scanned: int


def erase_from_archive(
    root: str,
    lead_ids: Sequence[str],
    *,
    storage_options: dict[str, Any] | None = None,
) -> ArchiveErasure:
    """Rewrite every archive file that holds an event of ``lead_ids`` without those events.

    Each file's ``lead_id`` column is read first (Parquet reads one column alone), so files
    without the leads cost a column read, not a rewrite. A rewritten file replaces the old
    one atomically, under the same name (as a flush writes it). The cost grows with the
    archive: the erasure consumer erases its requests in batches for that reason.
    """
    _, pa, pq = _libs()
    import pyarrow.compute as pc

    fs, base = open_root(root, storage_options)
    try:
        files = sorted(fs.glob(f"{base}/source=*/date=*/part-*.parquet")) if fs.exists(base) else []
    except OSError as exc:
        raise ArchiveError(f"can't list the archive at {root!r}: {exc}") from exc
    wanted = pa.array(sorted(set(lead_ids)), type=pa.string())
    local = _is_local(fs)
    removed: dict[str, int] = dict.fromkeys(lead_ids, 0)
    rewritten = deleted = 0
    for path in files:
        try:
            with fs.open(path, "rb") as fh:
                leads = pq.read_table(fh, columns=["lead_id"]).column("lead_id")
            hit = pc.is_in(leads, value_set=wanted)
            if not pc.any(hit).as_py():
                continue
            with fs.open(path, "rb") as fh:
                table = pq.read_table(fh)
        except (OSError, ValueError) as exc:
            raise ArchiveError(f"can't read {path}: {exc}") from exc
        for lead in pc.filter(leads, hit).to_pylist():
            removed[lead] = removed.get(lead, 0) + 1
        kept = table.filter(pc.invert(hit))
        if kept.num_rows == 0:
            try:
                fs.rm(path)
            except OSError as exc:
                raise ArchiveError(f"can't delete {path}: {exc}") from exc
            deleted += 1
        else:
            _put_table(fs, local, path.rsplit("/", 1)[0], path, kept, pq)
            rewritten += 1
    return ArchiveErasure(removed, rewritten, deleted, len(files))


_PARTITION = re.compile(r"source=(?P<source>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True, slots=True)
class ArchivePartition:
    """One date partition of one source: a directory (a prefix on an object store)."""

    source: str
    date: str
    path: str

    @property
    def name(self) -> str:
        return f"source={self.source}/date={self.date}"


def _partitions(fs: Any, base: str, root: str) -> list[ArchivePartition]:
    try:
        if not fs.exists(base):
            return []
        paths = fs.glob(f"{base}/source=*/date=*")
    except OSError as exc:
        raise ArchiveError(f"can't list the archive at {root!r}: {exc}") from exc
    found = [(m, p) for p in paths if (m := _PARTITION.search(str(p).rstrip("/")))]
    return sorted(
        (ArchivePartition(m["source"], m["date"], str(p).rstrip("/")) for m, p in found),
        key=lambda part: (part.date, part.source),
    )


def archive_partitions(
    root: str, *, storage_options: dict[str, Any] | None = None
) -> list[ArchivePartition]:
    """The archive's date partitions, oldest first (none while nothing was archived)."""
    fs, base = open_root(root, storage_options)
    return _partitions(fs, base, root)


@dataclass(frozen=True, slots=True)
class ArchivePrune:
    """What :func:`prune_archive` deleted: the partitions dated before ``cutoff``."""

    cutoff: str
    deleted: list[str]


def prune_archive(
    root: str,
    older_than_days: int,
    now_ms: int,
    *,
    storage_options: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> ArchivePrune:
    """Delete the date partitions whose every event is more than ``older_than_days`` days
    older than ``now_ms``: those dated before the day of ``now - older_than_days``.

    A partition holds one day of event time (UTC), so the day that straddles the limit is
    kept whole until its last moment is past it. Partitions are deleted oldest first: a
    prune that fails halfway leaves no gap in the history a retrain reads. ``dry_run``
    deletes nothing and says what it would delete.
    """
    if older_than_days < 1:
        raise ArchiveError(
            f"prune_archive keeps {older_than_days} days: give 1 or more (keeping the "
            "archive forever means not pruning it)"
        )
    cutoff = event_date(now_ms - older_than_days * DAY_MS)
    fs, base = open_root(root, storage_options)
    old = [p for p in _partitions(fs, base, root) if p.date < cutoff]
    for part in old:
        if dry_run:
            continue
        try:
            fs.rm(part.path, recursive=True)
        except FileNotFoundError:
            continue  # pruned meanwhile by another process (the archiver or the command)
        except OSError as exc:
            raise ArchiveError(f"can't delete {part.path}: {exc}") from exc
    return ArchivePrune(cutoff, [p.name for p in old])
