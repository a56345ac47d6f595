"""The event archive on an S3-compatible object store (moto's server), configured the way a
user would: the standard AWS_* environment variables and an s3:// root."""

from __future__ import annotations

import pytest

from leadscore.features.offline import history_parser
from leadscore.infra.archive import ArchivedEvent, ArchiveWriter, archive_files
from leadscore.jobs.history import load_events
from leadscore.schemas.validation import Event

from .helpers import BUCKET

pytestmark = pytest.mark.integration

T0 = 1_796_515_200_000  # 2026-12-06T00:00:00Z


def test_archive_on_s3(object_store: dict[str, str], monkeypatch) -> None:
    for k, v in object_store.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", object_store["AWS_ENDPOINT"])
    parse = history_parser()
    recs = []
    for i in range(40):
        raw = (
            b'{"event_id":"s%d","lead_id":"L%d","source":"web","type":"page_view",'
            b'"ts":"2026-12-0%dT10:00:00Z"}' % (i, i % 4, 6 + i % 2)
        )
        ev = parse(raw)
        assert isinstance(ev, Event)
        recs.append(ArchivedEvent(ev, raw, "leads.web", i % 2, i))
    root = f"s3://{BUCKET}/events"
    w = ArchiveWriter(root)
    assert not w.local
    w.write(recs, now_ms=T0)
    w.write(recs[:10], now_ms=T0)  # a flush repeated after a crash
    _, files = archive_files(root)
    # Partition 0 holds the even events (day 6), partition 1 the odd ones (day 7): two
    # files per flush, and the repeat has other offsets, so two more.
    assert len(files) == 4
    events = load_events(root)
    assert sorted(e.event_id for e in events) == sorted(f"s{i}" for i in range(40))
    day7 = load_events(root, since_ms=T0 + 86_400_000)
    assert {e.event_id for e in day7} == {f"s{i}" for i in range(1, 40, 2)}
