"""``leadscore demo``, ``bench``: the tooling room."""

from __future__ import annotations

import argparse
import json
from typing import Any

from leadscore.cli.common import emit, say
from leadscore.settings import Settings


def register(sub: Any) -> None:
    d = sub.add_parser(
        "demo",
        help="everything on this machine: broker, Redis, model, live table",
        description="Starts a broker and Redis (unless LEADSCORE_KAFKA_BOOTSTRAP / "
        "LEADSCORE_REDIS_URL are set), trains a model on simulated history, runs a "
        "worker and streams simulated events while showing the hottest leads.",
    )
    d.add_argument("--events", type=int, default=None, help="stop after N events are scored")
    d.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    d.add_argument("--leads", type=int, default=300, help="live leads to simulate (default 300)")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--json", action="store_true", help="print a one-line JSON summary at the end")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser(
        "bench",
        help="end-to-end benchmark against a real broker and Redis",
        description="Pre-fills the input topics, runs one worker, reports steady-state "
        "events/s, event-to-score latency at a fixed rate, per-stage cost per event, "
        "optionally the worker's memory over a long run (soak), and the ratio to the seed "
        "article's one-row-DataFrame scoring path.",
    )
    b.add_argument("--events", type=int, default=100_000, help="events for the throughput run")
    b.add_argument("--rate", type=float, default=1000.0, help="events/s for the latency run")
    b.add_argument(
        "--latency-seconds",
        type=float,
        default=10.0,
        help="length of the latency run (default 10; the embedded broker slows down as it "
        "fills with one-event batches, so a longer run measures the broker more than the worker)",
    )
    b.add_argument(
        "--soak-seconds",
        type=float,
        default=0.0,
        help="then keep the worker busy at --rate for this long, sampling its memory and the "
        "latency per minute (600 = the 10-minute soak; default: no soak)",
    )
    b.add_argument(
        "--shadow",
        action="store_true",
        help="score every event with a second (shadow) model too, as `models shadow` does",
    )
    b.add_argument(
        "--throughput-only", action="store_true", help="measure the burst throughput only"
    )
    b.add_argument("--json", action="store_true", help="print the result as one JSON line")
    b.set_defaults(func=cmd_bench)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.tooling.demo import run_demo

    return run_demo(
        settings,
        events=args.events,
        rate=args.rate,
        as_json=args.json,
        leads=args.leads,
        seed=args.seed,
        say=say,
    )


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.tooling.bench import run_bench

    result = run_bench(
        settings,
        events=args.events,
        rate=args.rate,
        latency_seconds=args.latency_seconds,
        soak_seconds=args.soak_seconds,
        shadow=args.shadow,
        throughput_only=args.throughput_only,
        say=say,
    )
    if args.json:
        emit(result)
    else:
        say(json.dumps(result, indent=2))
    return 0
