"""The ``leadscore`` command line. Results go to stdout, progress and errors to stderr."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from streamer.exceptions import LeadscoreError
from streamer.settings import Settings, load_settings

log = logging.getLogger("leadscore")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``45s`` -> milliseconds."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30d, 12h or 90m")
    return int(float(m.group(1)) * _UNIT_MS[m.group(2)])


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _emit(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
    sys.stdout.flush()


# --- commands -----------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from streamer import gc_tuning
    from streamer.app import create_app
    from streamer.topics import ensure_topics
    from streamer.worker import BoundedWorker

    ensure_topics(settings)
    app, _rt = create_app(settings)
    # Everything the worker keeps for its lifetime (modules, the model) exists by now.
    gc_tuning.tune(settings.gc_gen0_threshold)
    worker = BoundedWorker(
        app,
        loglevel=settings.log_level.lower(),
        quiet=True,
        shutdown_timeout_s=settings.shutdown_timeout_s,
    )
    worker.execute_from_commandline()
    return 0


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.validation import parse_ts_ms
    from streamer.rebuild import run_rebuild

    settings.require_kafka()
    from_ms = None
    if args.from_time:
        from_ms = parse_ts_ms(args.from_time)
        if from_ms is None:
            raise LeadscoreError(
                f"--from-time {args.from_time!r} is not an RFC 3339 timestamp with offset"
            )
    offsets: dict[tuple[str, int], int] = {}
    for spec in args.from_offset or ():
        topic, _, rest = spec.rpartition(":")
        name, _, part = topic.rpartition(":")
        if not name or not part.isdigit() or not rest.isdigit():
            raise LeadscoreError(f"--from-offset {spec!r} is not SOURCE:PARTITION:OFFSET")
        offsets[(settings.topic(name), int(part))] = int(rest)
    report = run_rebuild(
        settings,
        from_ms=from_ms,
        from_offsets=offsets,
        restore_scores=not args.no_scores,
        progress=say,
    )
    _emit(report.as_dict())
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streamer.demo import run_demo

    return run_demo(
        settings,
        events=args.events,
        rate=args.rate,
        as_json=args.json,
        leads=args.leads,
        seed=args.seed,
    )


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from streamer.simulator import SimConfig, simulate

    t0 = time.perf_counter()
    events = simulate(SimConfig(leads=args.leads, events=args.events, seed=args.seed))
    say(
        f"simulated {len(events)} events for {args.leads} leads in {time.perf_counter() - t0:.1f} s"
    )
    if args.out:
        out = Path(args.out)
        with out.open("wb") as fh:
            for ev in events:
                fh.write(orjson.dumps(ev) + b"\n")
        say(f"wrote {out}")
        return 0
    from streamer.produce import EventProducer
    from streamer.topics import ensure_topics

    ensure_topics(settings)
    producer = EventProducer(settings)
    producer.send_all(events, rate=args.rate, progress=lambda n: say(f"  sent {n}"))
    producer.flush_or_raise()
    say(f"sent {producer.sent} events to {settings.kafka_bootstrap}")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from streamer.produce import EventProducer
    from streamer.topics import ensure_topics

    path = Path(args.file)
    if not path.exists():
        raise LeadscoreError(f"{path} does not exist")
    ensure_topics(settings)
    producer = EventProducer(settings)
    bad = 0

    def lines() -> Any:
        nonlocal bad
        with path.open("rb") as fh:
            for n, line in enumerate(fh, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    ev = orjson.loads(line)
                except orjson.JSONDecodeError:
                    ev = None
                if not isinstance(ev, dict) or "lead_id" not in ev or "source" not in ev:
                    # Unroutable lines still reach the worker, whose DLQ records why.
                    bad += 1
                    producer.send_raw(settings.topic("web"), None, line)
                    say(f"  line {n}: no lead_id/source; sent to leads.web for the DLQ")
                    continue
                yield ev

    producer.send_all(lines(), rate=args.rate, progress=lambda n: say(f"  sent {n}"))
    producer.flush_or_raise()
    say(f"replayed {producer.sent} events from {path} ({bad} unroutable)")
    return 0


def cmd_features(args: argparse.Namespace, settings: Settings) -> int:
    from features.offline import features_as_of, read_events, replay
    from schemas.validation import Event, parse_ts_ms

    at_ms = None
    if args.at:
        at_ms = parse_ts_ms(args.at)
        if at_ms is None:
            raise LeadscoreError(f"--at {args.at!r} is not an RFC 3339 timestamp with offset")
    events: list[Event] = []
    invalid = 0
    for n, res in read_events(args.events):
        if isinstance(res, Event):
            events.append(res)
        else:
            invalid += 1
            say(f"  line {n}: skipped ({res.code}: {res.message})")
    leads = replay(events, at_ms)
    for lead_id, feats in features_as_of(leads, at_ms):
        _emit({"lead_id": lead_id, "features": feats})
    say(f"{len(leads)} leads from {len(events)} events ({invalid} invalid lines skipped)")
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    out_dir = Path(args.out) if args.out else settings.model_dir
    if args.events:
        from streamer.training import train_from_events

        report = train_from_events(
            Path(args.events),
            horizon_ms=args.horizon,
            out_dir=out_dir,
            promote=not args.no_promote,
            progress=say,
        )
    else:
        if not args.data or not args.target:
            raise LeadscoreError("give --events FILE, or --data FILE with --target COLUMN")
        from model.tabular import train_from_table

        report = train_from_table(
            Path(args.data),
            args.target,
            out_dir=out_dir,
            keep_columns=tuple(args.keep or ()),
            segment_column=args.segment,
            promote=not args.no_promote,
            time_budget_s=args.time_budget,
            progress=say,
        )
    if args.json:
        _emit(report)
    else:
        say(json.dumps(report, indent=2, default=str))
    return 0


def _count(text: str) -> int:
    """argparse type: a whole number, 0 or more."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (a whole number, 0 or more)")
    return n


def cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    from model.tabular import predict_table

    n = predict_table(Path(args.model), Path(args.data), Path(args.out), max_reasons=args.reasons)
    say(f"scored {n} rows -> {args.out}")
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from model.registry import Registry

    reg = Registry(Path(args.model_dir) if args.model_dir else settings.model_dir)
    if args.action == "list":
        versions = reg.list()
        if not versions:
            say(f"no models in {reg.root}; train one with `leadscore train`")
        for v in versions:
            auc = (v.meta.get("metrics", {}).get("test") or {}).get("auc")
            auc_s = f"{auc:.4f}" if isinstance(auc, float) else "-"
            mark = "*" if v.champion else " "
            print(f"{mark} {v.version}  created {v.meta.get('created_at', '?')}  auc {auc_s}")
        return 0
    if not args.version:
        raise LeadscoreError(f"`leadscore models {args.action}` needs a VERSION")
    if args.action == "show":
        _emit(reg.meta(args.version))
        return 0
    reg.promote(args.version)
    say(f"{args.version} is now the champion in {reg.root}")
    return 0


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from streamer.erase import forget_lead

    result = asyncio.run(forget_lead(settings, args.lead_id))
    _emit(result)
    return 0


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    from streamer.sync import make_sink, run_sync

    settings.require_kafka()
    n = run_sync(
        settings,
        make_sink(args.sink),
        group_id=args.group,
        max_records=args.max_records,
        idle_exit_s=args.idle_exit,
        progress=say,
    )
    say(f"synced {n} score records to {args.sink}")
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from streamer.bench import run_bench

    result = run_bench(
        settings,
        events=args.events,
        rate=args.rate,
        latency_seconds=args.latency_seconds,
        soak_seconds=args.soak_seconds,
        say=say,
    )
    if args.json:
        _emit(result)
    else:
        say(json.dumps(result, indent=2))
    return 0


# --- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="leadscore",
        description="Real-time lead scoring: Kafka events -> Redis features -> LightGBM scores. "
        "Settings come from LEADSCORE_* environment variables (see README).",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    w = sub.add_parser(
        "worker",
        help="the Faust worker (agents + web server)",
        description="Consumes leads.web/email/crm, scores every event, publishes to "
        "leads.scores. Web: /health /ready /metrics POST /score GET /leads/{id}.",
    )
    w.set_defaults(func=cmd_worker)

    s = sub.add_parser("simulate", help="synthetic lead histories, to Kafka or a JSONL file")
    s.add_argument("--leads", type=int, required=True)
    s.add_argument("--events", type=int, required=True, help="approximate number of events")
    s.add_argument("--rate", type=float, default=None, help="events/s when producing to Kafka")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--out", help="write JSONL here instead of producing to Kafka")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("replay", help="produce the events of a JSONL file to their topics")
    r.add_argument("file")
    r.add_argument(
        "--rate", type=float, default=None, help="events/s (default: as fast as possible)"
    )
    r.set_defaults(func=cmd_replay)

    t = sub.add_parser(
        "train",
        help="train a model from an event history or a CRM table",
        description="--events FILE: point-in-time features, labels from CRM outcomes."
        " --data FILE --target COL: a CSV/Parquet export with a yes/no-like target.",
    )
    t.add_argument("--events", help="JSONL event history")
    t.add_argument(
        "--horizon",
        type=parse_duration_ms,
        default=parse_duration_ms("30d"),
        help="label = converts within this time after the scoring moment (default 30d)",
    )
    t.add_argument("--data", help="CSV or Parquet table")
    t.add_argument("--target", help="target column of --data")
    t.add_argument(
        "--keep",
        action="append",
        metavar="COLUMN",
        help="keep a column flagged as leakage (repeatable)",
    )
    t.add_argument("--segment", help="report metrics per value of this column")
    t.add_argument(
        "--time-budget",
        type=float,
        default=60.0,
        help="seconds for the hyper-parameter search (default 60)",
    )
    t.add_argument("--out", help="model registry directory (default LEADSCORE_MODEL_DIR)")
    t.add_argument("--no-promote", action="store_true", help="don't make it the champion")
    t.add_argument("--json", action="store_true", help="print the report as one JSON line")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="batch scoring of a table: one score per row, same order")
    pr.add_argument("--model", required=True, help="a registry directory or a version directory")
    pr.add_argument("--data", required=True)
    pr.add_argument("--out", required=True, help="output CSV or Parquet")
    pr.add_argument(
        "--reasons",
        type=_count,
        default=5,
        help="top reasons per row, exact TreeSHAP (default 5); they cost far more than the "
        "score on a large ensemble, 0 skips them for a fast scores-only run",
    )
    pr.set_defaults(func=cmd_predict)

    f = sub.add_parser("features", help="offline features from an event history (JSON lines)")
    f.add_argument("--events", required=True)
    f.add_argument("--at", help="RFC 3339 moment (default: each lead's latest event)")
    f.set_defaults(func=cmd_features)

    m = sub.add_parser("models", help="the model registry: list, show VERSION, promote VERSION")
    m.add_argument("action", choices=("list", "show", "promote"))
    m.add_argument("version", nargs="?")
    m.add_argument("--model-dir", help="registry directory (default LEADSCORE_MODEL_DIR)")
    m.set_defaults(func=cmd_models)

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
    sy.add_argument("--idle-exit", type=float, help="stop after this many idle seconds")
    sy.set_defaults(func=cmd_sync)

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
    b.add_argument("--json", action="store_true", help="print the result as one JSON line")
    b.set_defaults(func=cmd_bench)

    rb = sub.add_parser(
        "rebuild",
        help="rebuild the Redis feature state from the input topics",
        description="After Redis lost its data (restarted empty, flushed, replaced) the "
        "workers stop scoring and /ready answers 503. This replays leads.web/email/crm "
        "through the same Lua code, restores each lead's latest score from leads.scores, "
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
        "--no-scores", action="store_true", help="don't restore latest scores from leads.scores"
    )
    rb.set_defaults(func=cmd_rebuild)

    fg = sub.add_parser("forget", help="erase a lead's features and score (and tombstone it)")
    fg.add_argument("lead_id")
    fg.set_defaults(func=cmd_forget)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    try:
        settings = load_settings()
        return func(args, settings)
    except LeadscoreError as exc:
        say(f"leadscore: error: {exc}")
        return 2
    except KeyboardInterrupt:
        say("leadscore: interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - domain errors of features/model packages
        from features.exceptions import FeatureError
        from model.exceptions import ModelError

        if isinstance(exc, FeatureError | ModelError):
            say(f"leadscore: error: {exc}")
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
