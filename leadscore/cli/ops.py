"""``leadscore sync``, ``rebuild``: running alongside the workers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from leadscore.cli.common import emit, say
from leadscore.errors import ConfigError
from leadscore.settings import Settings


def register(sub: Any) -> None:
    sy = sub.add_parser(
        "sync",
        help="CRM sync consumer: leads.scores -> PostgreSQL/webhook/JSONL",
        description="Upserts the latest score per lead. Sinks: "
        "postgresql://user@host/db (table lead_scores), http(s)://... (POST JSON "
        "batches), jsonl:///path/file.jsonl. At-least-once; idempotent per lead.",
    )
    sy.add_argument("--sink", required=True, help="where scores go (see above)")
    sy.add_argument("--group", help="consumer group (default: <app id>-crm-sync)")
    sy.add_argument("--max-records", type=int, help="stop after this many records")
    sy.add_argument(
        "--idle-exit",
        type=float,
        help="stop after this many seconds without a record, counted from partition assignment",
    )
    sy.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    sy.set_defaults(func=cmd_sync)

    rb = sub.add_parser(
        "rebuild",
        help="rebuild the Redis feature state from the input topics",
        description="After Redis lost its data (restarted empty, flushed, replaced) the "
        "workers stop scoring and /ready answers 503. This replays the input topics "
        "(leads.web/email/crm/social/enrichment) through the same Lua code, restores each "
        "lead's latest score from leads.scores, "
        "and lets the workers resume where they stopped; events they had not scored yet "
        "are scored then. The input topics must still hold the events a feature window "
        "can reach (30 days). Prints a JSON summary.",
    )
    rb.add_argument(
        "--from-time",
        metavar="TS",
        help="replay from this RFC 3339 moment instead of the topics' beginning",
    )
    rb.add_argument(
        "--from-offset",
        action="append",
        metavar="SOURCE:PARTITION:OFFSET",
        help="replay this partition from this offset, e.g. web:0:1500 (repeatable)",
    )
    rb.add_argument(
        "--from-offsets-file",
        type=Path,
        metavar="FILE",
        help="catch a restored snapshot up: replay from the offsets a backup recorded "
        "(DIR/offsets.json of `leadscore backup`) onto the state Redis holds, which must be "
        "the backup's (see docs/runbook.md, 'Backup and restore')",
    )
    rb.add_argument(
        "--force",
        action="store_true",
        help="--from-offsets-file: don't check that Redis holds the backup's state generation",
    )
    rb.add_argument(
        "--no-scores", action="store_true", help="don't restore latest scores from leads.scores"
    )
    rb.set_defaults(func=cmd_rebuild)


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.integrations.sync import make_sink, run_sync
    from leadscore.integrations.sync_metrics import SyncMetrics

    settings.require_kafka()
    sink = make_sink(args.sink, settings)
    metrics = SyncMetrics.create()
    if settings.sync_metrics_port:
        metrics.serve(settings.sync_metrics_host, settings.sync_metrics_port)
        say(f"sync metrics on http://{settings.sync_metrics_host}:{settings.sync_metrics_port}")
    n = run_sync(
        settings,
        sink,
        group_id=args.group,
        max_records=args.max_records,
        idle_exit_s=args.idle_exit,
        progress=say,
        metrics=metrics,
    )
    dead = int(getattr(sink, "dead_lettered", 0))
    where = _redacted(args.sink)
    if args.json:
        emit({"records": n, "sink": where, "dead_lettered_batches": dead})
    else:
        say(f"synced {n} score records to {where}")
    return 0


def _redacted(url: str) -> str:
    """``url`` without its password (a PostgreSQL DSN may carry one).

    >>> _redacted("postgresql://crm:s3cret@db:5432/crm")
    'postgresql://crm:***@db:5432/crm'
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.jobs.rebuild import parse_from_offsets, parse_from_time, run_rebuild

    settings.require_kafka()
    base: str | None = None
    if args.from_offsets_file is not None:
        from leadscore.jobs.backup import read_offsets

        if args.from_time or args.from_offset:
            raise ConfigError("--from-offsets-file goes alone, without --from-time/--from-offset")
        backup = read_offsets(settings, args.from_offsets_file)
        offsets, base = backup.offsets, backup.generation
    else:
        if args.force:
            raise ConfigError("--force goes with --from-offsets-file only")
        offsets = parse_from_offsets(settings, args.from_offset or ())
    report = run_rebuild(
        settings,
        from_ms=parse_from_time(args.from_time),
        from_offsets=offsets,
        base_generation=base,
        force=args.force,
        restore_scores=not args.no_scores,
        progress=say,
    )
    emit(report.as_dict())
    return 0
