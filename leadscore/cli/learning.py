"""``leadscore archive`` and ``retrain``: the continuous-learning loop."""

from __future__ import annotations

import argparse
from typing import Any

from leadscore.cli.common import emit, parse_duration_ms, say, timestamp_ms
from leadscore.cli.models import add_gate_arguments, gate_policy
from leadscore.errors import ConfigError
from leadscore.settings import Settings


def register(sub: Any) -> None:
    a = sub.add_parser(
        "archive",
        help="keep every valid input event as date-partitioned Parquet (for retraining)",
        description="A consumer of leads.web/email/crm/social/enrichment in its own group "
        "that writes every valid event to ROOT/source=<source>/date=<day>/part-*.parquet "
        "(ROOT: a directory or an fsspec URL such as s3://bucket/events). Offsets are "
        "committed after the files are durable, so a crash loses nothing; readers keep one "
        "copy per event id. Invalid messages are the worker's to dead-letter: they are "
        "counted here, not archived. Needs the parquet extra (and s3 for s3:// URLs).",
    )
    a.add_argument("--root", help="archive root (default LEADSCORE_ARCHIVE_ROOT)")
    a.add_argument("--group", help="consumer group (default: <app id>-archive)")
    a.add_argument("--flush-events", type=int, default=50_000, help="flush after this many events")
    a.add_argument(
        "--flush-seconds", type=float, default=60.0, help="flush a buffer this old (default 60)"
    )
    a.add_argument("--max-events", type=int, help="stop after archiving this many events")
    a.add_argument("--idle-exit", type=float, help="stop after this many seconds without input")
    a.set_defaults(func=cmd_archive)

    r = sub.add_parser(
        "retrain",
        help="train a challenger on the archive's recent events; promote it if it passes",
        description="Builds the point-in-time training set from the archive's last --days "
        "days, trains a challenger and scores it, the champion and the rule baseline on the "
        "same most recent held-out moments (a time split; moments whose horizon has not "
        "passed are left out). The challenger becomes the champion only if: the window "
        "holds enough data (--min-leads, --min-conversions; checked before training), its "
        "AUC beats the champion's (the rules' for a first model) by --margin and by a "
        "one-sided paired DeLong test at --alpha, its calibration error is at most "
        "--max-ece, and no segment (company size, country, industry, lead source) loses "
        "more than --segment-tolerance of AUC. Every decision is written to the registry "
        "(`leadscore models decisions`, `models show VERSION`). Without --every it runs "
        "once (for cron or a Kubernetes CronJob); with --every it loops until stopped.",
    )
    r.add_argument("--archive", help="archive root (default LEADSCORE_ARCHIVE_ROOT)")
    r.add_argument("--days", type=float, default=90.0, help="training window in days (default 90)")
    r.add_argument(
        "--horizon",
        type=parse_duration_ms,
        default=parse_duration_ms("30d"),
        help="label = converts within this time after the scoring moment (default 30d)",
    )
    r.add_argument("--until", type=timestamp_ms, help="end of the window (default: now)")
    r.add_argument(
        "--train-until",
        type=timestamp_ms,
        help="train on moments before this only (the held-out moments stay the latest)",
    )
    r.add_argument("--seed", type=int, help="LightGBM's seed (default 7)")
    r.add_argument("--every", type=parse_duration_ms, help="run again every this long, e.g. 7d")
    r.add_argument(
        "--out",
        help="model registry: a directory or a URL such as s3://bucket/models "
        "(default LEADSCORE_MODEL_REGISTRY, else LEADSCORE_MODEL_DIR)",
    )
    add_gate_arguments(r)
    r.set_defaults(func=cmd_retrain)


def _root(given: str | None, settings: Settings, flag: str) -> str:
    root = given or settings.archive_root
    if not root:
        raise ConfigError(f"give {flag} ROOT or set LEADSCORE_ARCHIVE_ROOT")
    return root


def cmd_archive(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.integrations.archive import ArchiveLimits, run_archive

    stats = run_archive(
        settings,
        _root(args.root, settings, "--root"),
        group_id=args.group,
        limits=ArchiveLimits(flush_events=args.flush_events, flush_seconds=args.flush_seconds),
        max_events=args.max_events,
        idle_exit_s=args.idle_exit,
        progress=say,
    )
    emit(
        {
            "archived": stats.archived,
            "invalid": stats.invalid,
            "files": stats.files,
            "by_source": stats.by_source,
        }
    )
    return 0


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.jobs.retrain import retrain_every, retrain_once

    root = _root(args.archive, settings, "--archive")
    out_dir = args.out or settings.registry_root

    def once() -> dict[str, Any]:
        return retrain_once(
            root,
            out_dir=out_dir,
            days=args.days,
            horizon_ms=args.horizon,
            until_ms=args.until,
            train_until_ms=args.train_until,
            seed=args.seed,
            policy=gate_policy(args),
            progress=say,
            sensitive=Settings.names(settings.sensitive),
            redactor=settings.redactor,
        )

    if args.every is None:
        emit(once())
        return 0
    say(f"retraining every {args.every / 3_600_000:g} h; Ctrl-C or SIGTERM stops")
    retrain_every(args.every / 1000, once, emit=emit, say=say)
    return 0
