"""``leadscore retention``: what is kept, and for how long."""

from __future__ import annotations

import argparse
import time
from typing import Any

from leadscore.cli.common import emit
from leadscore.settings import Settings


def register(sub: Any) -> None:
    r = sub.add_parser(
        "retention",
        help="report what leadscore keeps and for how long (--apply: enforce it)",
        description="Reports every place leadscore keeps data and for how long: each topic "
        "it creates with its cleanup policy and retention as the settings configure them "
        "and, when Kafka answers, as the broker reports them (DescribeConfigs); the idle "
        "time after which a lead's Redis state expires, the event-id dedupe window and the "
        "erasure suppression period; the event archive's retention and its oldest and newest "
        "date partitions; the model registry and the monitor's state. Settings: "
        "LEADSCORE_STATE_IDLE_TTL_DAYS, LEADSCORE_INPUT_RETENTION_DAYS, "
        "LEADSCORE_DLQ_RETENTION_DAYS, LEADSCORE_ALERTS_RETENTION_DAYS, "
        "LEADSCORE_ERASURE_REQUEST_RETENTION_DAYS, LEADSCORE_ERASURE_AUDIT_RETENTION_DAYS, "
        "LEADSCORE_ARCHIVE_RETENTION_DAYS. Nothing changes without --apply.",
    )
    r.add_argument(
        "--apply",
        action="store_true",
        help="delete the archive's date partitions past retention, and set the configured "
        "retention on existing topics that hold other configs (IncrementalAlterConfigs); "
        "topics leadscore has not created yet get theirs when it creates them",
    )
    r.add_argument(
        "--archive", metavar="ROOT", help="archive root (default LEADSCORE_ARCHIVE_ROOT)"
    )
    r.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to wait for Kafka before reporting the configured values only (default 5)",
    )
    r.add_argument("--json", action="store_true", help="print the report as one JSON line")
    r.set_defaults(func=cmd_retention)


def cmd_retention(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.jobs.retention import apply_retention, render_text, retention_report

    now_ms = int(time.time() * 1000)
    applied = (
        apply_retention(
            settings, now_ms=now_ms, archive_root=args.archive, kafka_timeout=args.timeout
        )
        if args.apply
        else None
    )
    report = retention_report(
        settings, now_ms=now_ms, archive_root=args.archive, kafka_timeout=args.timeout
    )
    if args.json:
        emit({**report, "applied": applied} if applied is not None else report)
    else:
        print(render_text(report, applied))
    return 0
