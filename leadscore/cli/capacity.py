"""``leadscore capacity``: workers, partitions, Redis shards and memory for a load."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from leadscore.cli.common import emit
from leadscore.settings import Settings


def register(sub: Any) -> None:
    c = sub.add_parser(
        "capacity",
        help="size workers, partitions, Redis and the broker for N leads at R events/s",
        description="Applies docs/capacity.md's formula to per-event costs measured with "
        "`leadscore bench` (its per_event_costs; override them with the --*-us and --*-bytes "
        "options from your own run). Without --leads and --rate, prints the table for "
        "1 M / 10 M / 100 M leads at 1 k / 10 k / 100 k events/s.",
    )
    c.add_argument("--leads", type=int, help="live leads (with --rate)")
    c.add_argument("--rate", type=float, help="events per second (with --leads)")
    c.add_argument("--worker-us", type=float, help="worker CPU per event (bench: worker_cpu_us)")
    c.add_argument("--redis-us", type=float, help="Redis CPU per event (bench: redis_cpu_us)")
    c.add_argument("--lead-bytes", type=float, help="Redis bytes per lead besides its event ids")
    c.add_argument("--bytes-in", type=float, help="input record bytes (bench: bytes_in)")
    c.add_argument("--json", action="store_true", help="print the plan as one JSON line")
    c.set_defaults(func=cmd_capacity, parser=c)


def cmd_capacity(args: argparse.Namespace, _settings: Settings) -> int:
    from leadscore.tooling.capacity import as_dict, plan, table, with_overrides

    costs = with_overrides(
        worker_us=args.worker_us,
        redis_us=args.redis_us,
        lead_bytes=args.lead_bytes,
        bytes_in=args.bytes_in,
    )
    if args.leads is None and args.rate is None:
        sys.stdout.write(table(costs) + "\n")
        return 0
    if args.leads is None or args.rate is None:
        args.parser.error("give both --leads and --rate, or neither")
    p = plan(args.leads, args.rate, costs)
    if args.json:
        emit(as_dict(p, costs))
        return 0
    sys.stdout.write(
        f"{p.leads:,} leads at {p.rate:,.0f} events/s: {p.workers} workers, "
        f"{p.partitions} partitions per input topic, {p.redis_shards} Redis shard(s) "
        f"({p.shards_for_cpu} for CPU, {p.shards_for_memory} for memory"
        f"{', a cluster' if p.cluster else ''}), {p.redis_memory_gib:,.1f} GiB of Redis "
        f"({p.ids_per_lead:,.0f} event ids per lead), broker {p.broker_in_mb_s:,.2f} MB/s in "
        f"and {p.broker_out_mb_s:,.2f} MB/s of scores, {p.input_storage_tb:,.1f} TB of input "
        "topics stored\n"
    )
    return 0
