"""``leadscore simulate``, ``replay``, ``enrich``, ``features``: event histories and files."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from leadscore.cli.common import emit, say, timestamp_ms
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
        "--start",
        type=timestamp_ms,
        help="start of the history, RFC 3339 or a date (default: now minus --days); with "
        "--seed it makes the history reproducible to the byte",
    )
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
    s.add_argument(
        "--no-source-signal",
        action="store_true",
        help="a control world: the social and enrichment events come as usual but say "
        "nothing about who converts (by default intent surges, advocates' comments and a "
        "marketing-automation stack raise the odds)",
    )
    s.add_argument("--out", help="write JSONL here instead of producing to Kafka")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("replay", help="produce the events of a JSONL file to their topics")
    r.add_argument("file")
    r.add_argument(
        "--rate", type=float, default=None, help="events/s (default: as fast as possible)"
    )
    r.set_defaults(func=cmd_replay)

    e = sub.add_parser(
        "enrich",
        help="produce a provider's CSV or Parquet export as enrichment events",
        description=ENRICH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("file", help="the export: FILE.csv, or FILE.parquet / FILE.pq")
    e.add_argument("--provider", help="the provider of rows without a provider column value")
    e.add_argument(
        "--dry-run", action="store_true", help="read and validate every row, produce nothing"
    )
    e.add_argument(
        "--rate", type=float, default=None, help="events/s (default: as fast as possible)"
    )
    e.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    e.set_defaults(func=cmd_enrich)

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
            start_ms=args.start,
            days=args.days,
            concept_drift_day=args.concept_drift_day,
            data_drift_day=args.data_drift_day,
            new_source_signal=not args.no_source_signal,
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


ENRICH_DESCRIPTION = """\
Reads a provider's export and produces its rows to leads.enrichment, keyed by lead_id.
Columns (the first line of a CSV, or Parquet columns; names without case):

  lead_id         required
  observed_at     when the provider observed it: RFC 3339 with offset
  date            or a date, YYYY-MM-DD (midnight UTC); one of the two is required
  employees       firmographics: head count, a whole number
  revenue_band    firmographics: <1M, 1M-10M, 10M-50M, 50M-250M, 250M-1B or 1B+
  industry_code   firmographics: NAICS code, 2 to 6 digits
  technologies    technographics: the whole list, separated by ; or | (Parquet: a
                  list column too); an empty cell sends none, `none` an empty list
  intent_topic    intent: the research topic; intent_score (0-100) is then required
  intent_score
  provider        who delivered the row (else --provider)

A row makes a firmographics event if a firmographics column has a value, a
technographics event if its technologies cell has one, and an intent event if
intent_topic has a value. Other columns are ignored.

Event ids are a hash of the row's content: running a file again sends the same
events, which the feature store drops as duplicates. Every event is validated as the
worker will; a row with an invalid one is reported by its line (CSV) or row number
(Parquet) and not sent. Exit code 1 only if the file can't be read or lacks the
columns."""


def cmd_enrich(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.integrations.enrich import Rejection, enrich_file, open_export

    path = Path(args.file)
    export = open_export(path)
    if export.ignored:
        say(f"ignoring columns: {', '.join(export.ignored)}")
    shown = 0

    def reject(r: Rejection) -> None:
        nonlocal shown
        shown += 1
        if shown <= ENRICH_REJECTIONS_SHOWN:
            say(f"  {path.name} {r.where}: rejected, {r.reason}")

    bar = Progress("rows", total=export.total)
    try:
        summary = enrich_file(
            settings,
            path,
            provider=args.provider,
            dry_run=args.dry_run,
            rate=args.rate,
            on_reject=reject,
            counted=bar,
            export=export,
        )
    finally:
        bar.close()
    if summary.rejected > ENRICH_REJECTIONS_SHOWN:
        say(f"  ... and {summary.rejected - ENRICH_REJECTIONS_SHOWN} more rejected rows")
    events = ", ".join(f"{n} {t}" for t, n in summary.events.items())
    verb = "would send" if args.dry_run else "sent"
    say(
        f"{summary.rows} rows from {path}: {verb} {events}; {summary.rejected} rows rejected, "
        f"{summary.without_data} without values"
    )
    if args.json:
        emit(summary.as_dict())
    return 0


#: Rejected rows named one by one on stderr; the summary counts them all.
ENRICH_REJECTIONS_SHOWN = 100


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
