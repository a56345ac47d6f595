"""The event archive's files: layout, atomic writes, one copy per event id on read."""

from __future__ import annotations

from pathlib import Path

import orjson

from leadscore.features.offline import history_parser
from leadscore.infra.archive import ArchivedEvent, ArchiveWriter, read_archive
from leadscore.schemas.validation import Event

DAY_MS = 86_400_000
T0 = 1_796_515_200_000  # 2026-12-06T00:00:00Z


def _record(i: int, ts_ms: int, offset: int, source: str = "web") -> ArchivedEvent:
    raw = orjson.dumps(
        {
            "event_id": f"e{i}",
            "lead_id": f"L{i % 3}",
            "source": source,
            "type": "page_view" if source == "web" else "email_open",
            "ts": f"2026-12-0{6 + (ts_ms - T0) // DAY_MS}T00:00:0{i % 10}Z",
        }
    )
    ev = history_parser()(raw)
    assert isinstance(ev, Event)
    return ArchivedEvent(ev, raw, f"leads.{source}", 0, offset)


def test_files_are_partitioned_by_source_and_event_date(tmp_path: Path) -> None:
    w = ArchiveWriter(str(tmp_path))
    recs = [_record(0, T0, 10), _record(1, T0 + DAY_MS, 11), _record(2, T0, 12, "email")]
    paths = w.write(recs, now_ms=T0)
    rel = sorted(str(Path(p).relative_to(tmp_path).parent) for p in paths)
    assert rel == [
        "source=email/date=2026-12-06",
        "source=web/date=2026-12-06",
        "source=web/date=2026-12-07",
    ]
    assert not list(tmp_path.rglob("*.tmp"))
    read = list(read_archive(str(tmp_path), parse=history_parser()))
    assert [ev.event_id for *_, ev in read] == ["e2", "e0", "e1"]  # topic, partition, offset
    assert all(isinstance(ev, Event) for *_, ev in read)


def test_a_repeated_flush_and_a_repeated_id_are_read_once(tmp_path: Path) -> None:
    w = ArchiveWriter(str(tmp_path))
    recs = [_record(i, T0, 100 + i) for i in range(5)]
    w.write(recs, now_ms=T0)
    # The same messages again (a crash before the commit), and e0 re-sent later.
    w.write(recs[2:], now_ms=T0)
    w.write([_record(0, T0, 200)], now_ms=T0)
    read = list(read_archive(str(tmp_path), parse=history_parser()))
    assert sorted(ev.event_id for *_, ev in read) == [f"e{i}" for i in range(5)]
    kept = {ev.event_id: off for _, _, off, ev in read}
    assert kept["e0"] == 100  # the first copy


def test_since_until_cut_by_event_time(tmp_path: Path) -> None:
    w = ArchiveWriter(str(tmp_path))
    w.write([_record(i, T0 + (i % 3) * DAY_MS, i) for i in range(9)], now_ms=T0)
    read = read_archive(
        str(tmp_path), since_ms=T0 + DAY_MS, until_ms=T0 + 2 * DAY_MS, parse=history_parser()
    )
    assert sorted(ev.event_id for *_, ev in read) == ["e1", "e4", "e7"]
