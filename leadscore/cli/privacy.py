"""``leadscore forget``, ``erasure``, ``audit``: erasing leads (right to be forgotten)."""

from __future__ import annotations

import argparse
from typing import Any

from leadscore.cli.common import emit, say
from leadscore.settings import Settings


def register(sub: Any) -> None:
    fg = sub.add_parser(
        "forget",
        help="erase leads everywhere (right to be forgotten), audited",
        description="Erases each lead: its Redis state (a suppression marker stays for "
        "LEADSCORE_ERASURE_SUPPRESS_DAYS: later events of the lead are dropped and counted), "
        "a tombstone on every output topic keyed by lead (the CRM sync deletes the row), its "
        "events in the archive (LEADSCORE_ARCHIVE_ROOT), and one audit record per lead on "
        "leads.erasure.audit naming it only by a keyed hash (needs LEADSCORE_PRIVACY_KEY). "
        "Idempotent. Prints the audit records. --via-topic sends requests to leads.erasure "
        "for `leadscore erasure` instead.",
    )
    fg.add_argument("lead_ids", nargs="+", metavar="LEAD_ID")
    fg.add_argument(
        "--via-topic",
        action="store_true",
        help="publish erasure requests on leads.erasure (the erasure consumer does the rest)",
    )
    fg.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="longest wait for the workers and the archiver to finish what they read before "
        "the erasure (default LEADSCORE_ERASURE_WAIT_S)",
    )
    fg.add_argument("--json", action="store_true", help="print one JSON line")
    fg.set_defaults(func=cmd_forget)

    er = sub.add_parser(
        "erasure",
        help="erasure consumer: the requests on leads.erasure, erased in batches",
        description='Consumes leads.erasure (JSON {"lead_id": ..., "requested_at": '
        "...}, keyed by lead id) and erases the requested leads as `leadscore forget` does, "
        "a batch at a time (the archive rewrite costs per batch). Invalid requests go to "
        "leads.dlq. Offsets are committed after each batch is erased and audited.",
    )
    er.add_argument("--group", help="consumer group (default: <app id>-erasure)")
    er.add_argument("--batch", type=int, default=500, help="requests per batch (default 500)")
    er.add_argument(
        "--batch-wait",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="gather requests this long before erasing them (default 5)",
    )
    er.add_argument("--max-requests", type=int, help="stop after this many requests")
    er.add_argument(
        "--idle-exit", type=float, help="stop after this many seconds without a request"
    )
    er.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    er.set_defaults(func=cmd_erasure)

    au = sub.add_parser(
        "audit",
        help="list the erasure audit log (leads.erasure.audit)",
        description="Reads leads.erasure.audit from the beginning. --lead ID shows the "
        "records of that lead only (its id is hashed with LEADSCORE_PRIVACY_KEY and compared; "
        "the log never holds the id itself).",
    )
    au.add_argument("--lead", metavar="LEAD_ID", help="only this lead's erasures")
    au.add_argument("--json", action="store_true", help="one JSON record per line")
    au.set_defaults(func=cmd_audit)


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.integrations.erase import privacy_key, request_erasure, run_forget

    if args.via_topic:
        settings.require_kafka()
        privacy_key(settings)  # the consumer needs it too: say so now, not in its log
        n = request_erasure(settings, args.lead_ids)
        summary = {"requested": n, "topic": settings.topic("erasure")}
        if args.json:
            emit(summary)
        else:
            say(f"sent {n} erasure requests to {summary['topic']} for `leadscore erasure`")
        return 0
    records = run_forget(settings, args.lead_ids, say=None if args.json else say, wait_s=args.wait)
    if args.json:
        emit({"erased": len(records), "audit": records})
    else:
        for rec in records:
            emit(rec)
        if settings.kafka_bootstrap:
            say(f"erased {len(records)} leads; audit records on {settings.topic('erasure.audit')}")
        else:
            say(
                f"erased {len(records)} leads from Redis (and the archive, if set); with no "
                "LEADSCORE_KAFKA_BOOTSTRAP no tombstone was sent and the audit records above "
                "were not published: keep them"
            )
    return 0


def cmd_erasure(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.integrations.erase import privacy_key
    from leadscore.integrations.erasure_consumer import run_erasure

    settings.require_kafka()
    privacy_key(settings)
    stats = run_erasure(
        settings,
        group_id=args.group,
        batch=args.batch,
        batch_wait_s=args.batch_wait,
        max_requests=args.max_requests,
        idle_exit_s=args.idle_exit,
        say=say,
    )
    summary = {
        "requests": stats.requests,
        "erased": stats.erased,
        "invalid": stats.invalid,
        "batches": stats.batches,
    }
    if args.json:
        emit(summary)
    else:
        say(f"erasure consumer stopped: {summary}")
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.integrations.erase import lead_hash, privacy_key, read_audit

    settings.require_kafka()
    records = read_audit(settings)
    if args.lead:
        wanted = lead_hash(privacy_key(settings), args.lead)
        records = [r for r in records if r.get("lead_hash") == wanted]
    for rec in records:
        emit(rec)
    if not args.json:
        say(f"{len(records)} erasure records on {settings.topic('erasure.audit')}")
    return 0
