"""``leadscore demo``, ``bench``: the tooling room."""

from __future__ import annotations

import argparse
import json
from typing import Any

from leadscore.cli.common import emit, say, source_list
from leadscore.schemas import SOURCES
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

    u = sub.add_parser(
        "up",
        help="a standalone setup: embedded broker + Redis + a worker (+ --api), until Ctrl-C",
        description="Starts the embedded Kafka-protocol broker and Redis (in memory) and a "
        "worker on them, scoring with the registry's champion (LEADSCORE_MODEL_DIR) or the "
        "rules; prints `export LEADSCORE_KAFKA_BOOTSTRAP=... LEADSCORE_REDIS_URL=...` lines "
        "to point producers, `replay`, `sync` and `api` at. Ctrl-C or SIGTERM stops it all. "
        "For production, run `leadscore worker` against your own Kafka and Redis.",
    )
    u.add_argument("--kafka-port", type=int, default=9092, help="broker port (default 9092)")
    u.add_argument("--redis-port", type=int, help="Redis port (default: a free one)")
    u.add_argument("--api", action="store_true", help="also serve `leadscore api`")
    u.add_argument("--api-port", type=int, help="the API's port (default LEADSCORE_API_PORT)")
    u.add_argument("--json", action="store_true", help="print the addresses as one JSON line")
    u.set_defaults(func=cmd_up)
    _register_bench(sub)


def _register_bench(sub: Any) -> None:
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
        help="then keep the worker busy at --rate for this long, one produce request per "
        "event, sampling its memory and the event-to-score latency per minute (600 = the "
        "10-minute soak; default: no soak)",
    )
    b.add_argument(
        "--soak-batched",
        action="store_true",
        help="in the soak, send each second's events as one batch per partition instead of "
        "one request per event: the embedded broker slows with every batch it holds, so "
        "this lets a long soak watch the worker's memory rather than the broker",
    )
    b.add_argument(
        "--shadow",
        action="store_true",
        help="score every event with a second (shadow) model too, as `models shadow` does",
    )
    b.add_argument(
        "--throughput-only", action="store_true", help="measure the burst throughput only"
    )
    b.add_argument(
        "--sources",
        type=source_list,
        default=SOURCES,
        metavar="LIST",
        help=f"traffic of these sources only, comma separated (default all: {','.join(SOURCES)}); "
        "--events are still sent, and the result's traffic_sources gives the mix",
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
        soak_batched=args.soak_batched,
        shadow=args.shadow,
        throughput_only=args.throughput_only,
        sources=args.sources,
        say=say,
    )
    if args.json:
        emit(result)
    else:
        say(json.dumps(result, indent=2))
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.tooling.up import run_up

    api_port = (args.api_port or settings.api_port) if args.api else None
    return run_up(
        settings,
        kafka_port=args.kafka_port,
        redis_port=args.redis_port,
        api_port=api_port,
        say=say,
        as_json=args.json,
    )
