"""``leadscore simulate``, ``replay``, ``features``: event histories."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from leadscore.cli.common import emit, say
from leadscore.errors import LeadscoreError
from leadscore.infra.progress import Progress
from leadscore.settings import Settings


def register(sub: Any) -> None:
    s = sub.add_parser("simulate", help="synthetic lead histories, to Kafka or a JSONL file")
    s.add_argument("--leads", type=int, required=True)
    s.add_argument("--events", type=int, required=True, help="approximate number of events")
    s.add_argument("--rate", type=float, default=None, help="events/s when producing to Kafka")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--days", type=float, default=90.0, help="length of the history (default 90)")
    s.add_argument(
        "--concept-drift-day",
        type=float,
        help="from this day of the history on, what converts changes (profile effects flip)",
    )
    s.add_argument(
        "--data-drift-day",
        type=float,
        help="leads created from this day on come from another mix of industries, countries "
        "and lead sources",
    )
    s.add_argument("--out", help="write JSONL here instead of producing to Kafka")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("replay", help="produce the events of a JSONL file to their topics")
    r.add_argument("file")
    r.add_argument(
        "--rate", type=float, default=None, help="events/s (default: as fast as possible)"
    )
    r.set_defaults(func=cmd_replay)

    f = sub.add_parser("features", help="offline features from an event history (JSON lines)")
    f.add_argument("--events", required=True)
    f.add_argument("--at", help="RFC 3339 moment (default: each lead's latest event)")
    f.set_defaults(func=cmd_features)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.tooling.simulator import SimConfig, produce_events, simulate, write_jsonl

    t0 = time.perf_counter()
    events = simulate(
        SimConfig(
            leads=args.leads,
            events=args.events,
            seed=args.seed,
            days=args.days,
            concept_drift_day=args.concept_drift_day,
            data_drift_day=args.data_drift_day,
        )
    )
    say(
        f"simulated {len(events)} events for {args.leads} leads in {time.perf_counter() - t0:.1f} s"
    )
    if args.out:
        write_jsonl(events, Path(args.out))
        say(f"wrote {args.out}")
        return 0
    bar = Progress("sent", total=len(events))
    try:
        sent = produce_events(settings, events, rate=args.rate, progress=say, counted=bar)
    finally:
        bar.close()
    say(f"sent {sent} events to {settings.kafka_bootstrap}")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.infra.producer import replay_file

    path = Path(args.file)
    bar = Progress("sent", total=_count_lines(path))
    try:
        sent, bad = replay_file(settings, path, rate=args.rate, progress=say, counted=bar)
    finally:
        bar.close()
    say(f"replayed {sent} events from {path} ({bad} unroutable)")
    return 0


def _count_lines(path: Path) -> int | None:
    """Lines in ``path`` (one fast pass), for the progress bar; None if it can't be read."""
    try:
        with path.open("rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return None


def cmd_features(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.features.offline import features_from_file
    from leadscore.schemas.validation import parse_ts_ms

    at_ms = None
    if args.at:
        at_ms = parse_ts_ms(args.at)
        if at_ms is None:
            raise LeadscoreError(f"--at {args.at!r} is not an RFC 3339 timestamp with offset")
    result = features_from_file(args.events, at_ms, on_invalid=say, redactor=settings.redactor)
    for lead_id, feats in result.features:
        emit({"lead_id": lead_id, "features": feats})
    say(
        f"{result.leads} leads from {result.events} events ({result.invalid} invalid lines skipped)"
    )
    return 0
