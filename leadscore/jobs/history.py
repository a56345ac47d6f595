"""Event histories for training: a JSONL file or the event archive, cut to a time window."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from leadscore.features.offline import history_parser, read_events
from leadscore.infra.archive import read_archive
from leadscore.schemas.privacy import Redactor
from leadscore.schemas.validation import Event


def is_jsonl(source: str | Path) -> bool:
    """A JSONL history is a file; anything else (a directory, a URL) is an archive root."""
    text = str(source)
    return "://" not in text and os.path.isfile(text)


def load_events(
    source: str | Path,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    progress: Callable[[str], None] | None = None,
    redactor: Redactor | None = None,
) -> list[Event]:
    """The valid events of ``source`` with ``since <= ts < until`` (invalid JSONL lines are
    skipped, as the worker would send them to the DLQ), redacted by ``redactor`` (the
    worker's, ``Settings.redactor``) as the worker would."""

    def inside(ev: Event) -> bool:
        return (since_ms is None or ev.ts_ms >= since_ms) and (
            until_ms is None or ev.ts_ms < until_ms
        )

    if is_jsonl(source):
        # One event per id, as the worker counts a repeated id as a duplicate (and the
        # archive keeps one copy).
        seen: set[str] = set()
        events = []
        for _, e in read_events(source, redactor):
            if isinstance(e, Event) and e.event_id not in seen and inside(e):
                seen.add(e.event_id)
                events.append(e)
        kind = "JSONL history"
    else:
        parse = history_parser(redactor)
        events = [
            ev
            for _, _, _, ev in read_archive(
                str(source), since_ms=since_ms, until_ms=until_ms, parse=parse
            )
        ]
        kind = "event archive"
    if progress is not None:
        progress(f"read {len(events):,} events from the {kind} {source}")
    return events
