"""Archive retention: date partitions past the retention are deleted, the rest stays readable
(on a local directory and on an object-store-like filesystem), and the archiver prunes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from leadscore.features.offline import history_parser
from leadscore.infra.archive import (
    ArchivedEvent,
    ArchiveError,
    ArchiveWriter,
    archive_partitions,
    prune_archive,
    read_archive,
)
from leadscore.integrations.archive import Archiver
from leadscore.schemas.validation import Event
from leadscore.settings import Settings

DAY_MS = 86_400_000
NOW = 1_796_551_200_000  # 2026-12-06T10:00:00Z


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _write_days(root: str, days_ago: range, source: str = "web", now: int = NOW) -> None:
    """One event on each day ``now - d`` (at now's time of day) plus one at the day's first
    and last millisecond, so each partition spans its whole day."""
    parse = history_parser()
    recs = []
    for d in days_ago:
        at = now - d * DAY_MS
        start = at - at % DAY_MS
        for k, ts in enumerate((start, at, start + DAY_MS - 1)):
            raw = orjson.dumps(
                {
                    "event_id": f"{source}-{d}-{k}",
                    "lead_id": "L1",
                    "source": source,
                    "type": "page_view" if source == "web" else "email_open",
                    "ts": _iso(ts),
                }
            )
            ev = parse(raw)
            assert isinstance(ev, Event)
            recs.append(ArchivedEvent(ev, raw, f"leads.{source}", 0, len(recs)))
    ArchiveWriter(root).write(recs, now_ms=NOW)


def _ids(root: str) -> set[str]:
    return {ev.event_id for *_, ev in read_archive(root, parse=history_parser())}


@pytest.fixture(params=["local", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A directory, or fsspec's in-memory filesystem (prefixes, as on an object store)."""
    return (
        str(tmp_path / "archive") if request.param == "local" else f"memory://a-{uuid.uuid4().hex}"
    )


def test_partitions_whose_every_event_is_past_retention_are_deleted(root: str) -> None:
    _write_days(root, range(0, 11))
    _write_days(root, range(2, 6), source="email")

    pruned = prune_archive(root, 3, NOW)

    # now - 3 days is 2026-12-03T10:00Z: the 3rd still holds newer events, the 2nd does not.
    assert pruned.cutoff == "2026-12-03"
    assert pruned.deleted == [
        *(f"source=web/date=2026-11-{d:02d}" for d in range(26, 31)),
        "source=email/date=2026-12-01",
        "source=web/date=2026-12-01",
        "source=email/date=2026-12-02",
        "source=web/date=2026-12-02",
    ]
    left = archive_partitions(root)
    assert {p.date for p in left} == {"2026-12-03", "2026-12-04", "2026-12-05", "2026-12-06"}
    assert _ids(root) == {
        f"{src}-{d}-{k}"
        for src, ds in (("web", range(0, 4)), ("email", range(2, 4)))
        for d in ds
        for k in range(3)
    }


def test_a_dry_run_deletes_nothing_and_a_second_prune_finds_nothing(root: str) -> None:
    _write_days(root, range(0, 6))
    before = _ids(root)
    assert prune_archive(root, 2, NOW, dry_run=True).deleted == [
        f"source=web/date=2026-12-0{d}" for d in (1, 2, 3)
    ]
    assert _ids(root) == before
    assert len(prune_archive(root, 2, NOW).deleted) == 3
    assert prune_archive(root, 2, NOW).deleted == []


def test_an_empty_or_missing_archive_has_nothing_to_prune(tmp_path: Path) -> None:
    assert prune_archive(str(tmp_path / "none"), 1, NOW).deleted == []
    assert archive_partitions(str(tmp_path / "none")) == []


def test_keeping_zero_days_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="1 or more"):
        prune_archive(str(tmp_path), 0, NOW)


class _IdleConsumer:
    """Stands in for Kafka: no messages; the first poll asks the archiver to stop."""

    def __init__(self, archiver: Archiver) -> None:
        self.archiver = archiver
        self.polls = 0

    def subscribe(self, _topics: list[str], **_kw: Any) -> None:
        pass

    def consume(self, _n: int, timeout: float) -> list[Any]:
        self.polls += 1
        self.archiver.stop()
        return []

    def commit(self, **_kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("days", "left"), [(3, 4), (0, 11)])
def test_the_archiver_prunes_by_its_setting_when_it_starts(
    tmp_path: Path, days: int, left: int
) -> None:
    root = str(tmp_path / "archive")
    _write_days(root, range(0, 11), now=int(datetime.now(UTC).timestamp() * 1000))
    s = Settings(kafka_bootstrap="127.0.0.1:9", redis_url=None, archive_retention_days=days)
    archiver = Archiver(s, root)
    archiver.consumer.close()
    archiver.consumer = _IdleConsumer(archiver)  # type: ignore[assignment]
    archiver.run()
    assert archiver.consumer.polls == 1  # type: ignore[attr-defined]
    assert len(archive_partitions(root)) == left
