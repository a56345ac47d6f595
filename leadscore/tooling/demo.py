"""``leadscore demo``: the whole system on one machine, in one command.

Starts (or uses) a broker and Redis, trains a first model on a simulated history, runs a
worker as a child process, streams simulated live events and shows the hottest leads.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from leadscore.errors import LeadscoreError
from leadscore.features.definitions import DAY_MS
from leadscore.infra.producer import EventProducer
from leadscore.infra.topics import end_offsets, ensure_topics
from leadscore.jobs.train_events import train_from_event_list
from leadscore.schemas.validation import format_ts_ms
from leadscore.settings import Settings
from leadscore.tooling.embedded import free_port, services, spawn_worker, wait_worker_ready
from leadscore.tooling.simulator import SimConfig, iter_live, simulated_events


@dataclass
class Board:
    """What the live table shows; updated by the score reader thread."""

    scored: int = 0
    dlq: int = 0
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    models: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rec: dict[str, Any], produced_at: float | None) -> None:
        with self.lock:
            self.scored += 1
            lead = rec["lead_id"]
            self.latest[lead] = rec
            self.counts[lead] = self.counts.get(lead, 0) + 1
            self.models.add(rec["model_version"])
            if produced_at is not None:
                self.latencies.append(max(0.0, time.time() - produced_at))

    def hottest(self, n: int = 12) -> list[dict[str, Any]]:
        with self.lock:
            return sorted(self.latest.values(), key=lambda r: -r["score"])[:n]

    def percentile(self, q: float) -> float | None:
        with self.lock:
            if not self.latencies:
                return None
            xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


def _read_scores(
    settings: Settings,
    board: Board,
    stop: threading.Event,
    start_offsets: dict[tuple[str, int], int],
) -> None:
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"demo-{uuid.uuid4()}",
            "enable.auto.commit": False,
            # The broker holds a fetch for its full wait even when data arrives: keep it short
            # so the table shows scores as they happen.
            "fetch.wait.max.ms": 10,
        }
    )
    # Manual assignment reads at once; a consumer group would wait for a join first.
    consumer.assign([TopicPartition(t, p, off) for (t, p), off in start_offsets.items()])
    scores_topic = settings.topic("scores")
    try:
        while not stop.is_set():
            msg = consumer.poll(0.2)
            value = None if msg is None or msg.error() else msg.value()
            if msg is None or value is None:
                continue
            if msg.topic() == scores_topic:
                rec = orjson.loads(value)
                board.add(rec, _produced_at(rec))
            else:
                with board.lock:
                    board.dlq += 1
    finally:
        consumer.close()


def _produced_at(rec: dict[str, Any]) -> float | None:
    from leadscore.schemas.validation import parse_ts_ms

    ms = parse_ts_ms(rec["event_ts"])
    return None if ms is None else ms / 1000


def _end_offsets(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "leadscore-demo-offsets"})
    try:
        md = consumer.list_topics(timeout=10)
    finally:
        consumer.close()
    return end_offsets(settings, [(t, p) for t in topics for p in md.topics[t].partitions])


def _table(board: Board, started: float, sent: int) -> Any:
    from rich.table import Table

    elapsed = max(time.monotonic() - started, 1e-9)
    p50, p99 = board.percentile(0.5), board.percentile(0.99)
    lat = f"p50 {p50 * 1000:.0f} ms  p99 {p99 * 1000:.0f} ms" if p50 is not None and p99 else ""
    table = Table(
        title=f"leadscore - hottest leads   sent {sent}  scored {board.scored}  "
        f"({board.scored / elapsed:.0f}/s)  dlq {board.dlq}  {lat}",
        caption="model: " + ", ".join(sorted(board.models)) + "   Ctrl-C to stop",
    )
    for col in ("lead", "score", "tier", "events", "top reason"):
        table.add_column(col)
    colors = {"hot": "bold red", "warm": "yellow", "cold": "cyan"}
    for rec in board.hottest():
        reason = rec["reasons"][0] if rec["reasons"] else None
        why = (
            f"{reason['feature']}={reason['value']} ({reason['contribution']:+.2f})"
            if reason
            else ""
        )
        table.add_row(
            rec["lead_id"],
            f"{rec['score']:.3f}",
            f"[{colors[rec['tier']]}]{rec['tier']}[/]",
            str(board.counts.get(rec["lead_id"], 0)),
            why,
        )
    return table


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_demo(
    settings: Settings,
    *,
    events: int | None,
    rate: float,
    as_json: bool,
    leads: int,
    seed: int,
    say: Callable[[str], None],
) -> int:
    """``leadscore demo``: embedded services, a model, a worker and a live table."""
    # Ctrl-C and `kill` both unwind through the finally blocks below, which stop the worker,
    # the broker and Redis (a shell's background job may even start us with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if importlib.util.find_spec("rich") is None:
        raise LeadscoreError("the demo needs the demo extra: pip install 'leadscore[demo]'")
    if events is not None and events <= 0:
        raise LeadscoreError("--events must be a positive number")
    if rate <= 0:
        raise LeadscoreError("--rate must be positive")
    t_start = time.monotonic()
    say(
        "starting broker and Redis ..."
        if not settings.kafka_bootstrap
        else f"using Kafka at {settings.kafka_bootstrap}"
    )
    with (
        services(settings.kafka_bootstrap, os.environ.get("LEADSCORE_REDIS_URL")) as svc,
        tempfile.TemporaryDirectory(prefix="leadscore-demo-") as tmp,
    ):
        live = settings.model_copy(
            update={
                "kafka_bootstrap": svc.kafka_bootstrap,
                "redis_url": svc.redis_url,
                "model_dir": Path(tmp) / "models",
                "app_id": f"leadscore-demo-{uuid.uuid4().hex[:8]}",
                "web_port": free_port(),
                "web_host": "127.0.0.1",
            }
        )
        ensure_topics(live)
        say(f"broker {svc.kafka_bootstrap}, Redis {svc.redis_url}")
        # 2,500 leads: enough for the promotion gate's data-sufficiency bar (1,000 leads
        # and 120 conversions among the training moments).
        say("simulating 90 days of history for 2,500 leads ...")
        history = simulated_events(
            SimConfig(leads=2500, events=70_000, seed=seed, start_ms=_history_start(), days=90.0)
        )
        report = train_from_event_list(
            history, horizon_ms=30 * DAY_MS, out_dir=live.model_dir, progress=say
        )
        live_events = iter_live(SimConfig(leads=leads, seed=seed + 1), int(time.time() * 1000))
        board, sent = _run_live(live, Path(tmp), live_events, events, rate, as_json, say)
    summary = {
        "scored": board.scored,
        "events_sent": sent,
        "dlq": board.dlq,
        "leads": len(board.latest),
        "hot_leads": sum(1 for r in board.latest.values() if r["tier"] == "hot"),
        "model_version": sorted(board.models)[-1] if board.models else None,
        "model_auc": report.get("auc"),
        "baseline_auc": report.get("baseline_auc"),
        "gate": report["outcome"],
        "latency_ms": {
            "p50": round((board.percentile(0.5) or 0) * 1000, 1),
            "p99": round((board.percentile(0.99) or 0) * 1000, 1),
        },
        "seconds": round(time.monotonic() - t_start, 1),
    }
    if as_json:
        print(orjson.dumps(summary).decode(), flush=True)
    else:
        say(
            f"scored {summary['scored']} events for {summary['leads']} leads in "
            f"{summary['seconds']} s; stopped the worker, broker and Redis"
        )
    return 0


def _history_start(days: int = 90) -> int:
    """Start of the training history: ``days`` before the last week boundary (epoch weeks).

    The simulator's days, hours and weekdays (its weekday effects) then fall the same way
    on every run, so one seed gives the same history, the same model and the same gate
    decision whatever the day or time; a history ending "now" shifted every bucket boundary
    and made the first model (and whether the gate promotes it) vary from run to run.

    >>> week = 7 * DAY_MS
    >>> start = _history_start()
    >>> (start + 90 * DAY_MS) % week, time.time() * 1000 - (start + 90 * DAY_MS) < week
    (0, True)
    """
    week = 7 * DAY_MS
    return (int(time.time() * 1000) // week) * week - days * DAY_MS


def _run_live(
    live: Settings,
    tmp: Path,
    live_events: Iterator[dict[str, Any]],
    events: int | None,
    rate: float,
    as_json: bool,
    say: Callable[[str], None],
) -> tuple[Board, int]:
    """Run a worker and stream simulated events to it while the live table shows the
    hottest leads; stop the worker at the end (Ctrl-C included)."""
    log_path = tmp / "worker.log"
    say(f"starting the worker (web on http://127.0.0.1:{live.web_port}) ...")
    worker = spawn_worker(live, log_path)
    stop = threading.Event()
    board = Board()
    reader: threading.Thread | None = None
    try:
        wait_worker_ready(worker, live.web_port, log_path, timeout=120)
        offsets = _end_offsets(live, [live.topic("scores"), live.topic("dlq")])
        reader = threading.Thread(
            target=_read_scores, args=(live, board, stop, offsets), daemon=True
        )
        reader.start()
        producer = EventProducer(live, linger_ms=2)
        sent = _stream(
            live, producer, live_events, board, events, rate, as_json, time.monotonic(), say
        )
        # Drop the librdkafka handle before the broker stops, or it logs reconnect errors.
        producer.flush(5)
        del producer
        return board, sent
    finally:
        stop.set()
        if reader is not None:
            reader.join(5)
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()


def _stream(
    settings: Settings,
    producer: EventProducer,
    source: Any,
    board: Board,
    events: int | None,
    rate: float,
    quiet: bool,
    t_start: float,
    say: Callable[[str], None],
) -> int:
    """Produce paced live events until ``events`` are scored (or Ctrl-C); return how many sent."""
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=True)
    interactive = console.is_terminal and not quiet
    started = time.monotonic()
    sent = 0
    last_note = started
    live_view = Live(console=console, refresh_per_second=4) if interactive else None
    try:
        if live_view is not None:
            live_view.start()
        for ev in source:
            if events is not None and sent >= events:
                break
            # Live events carry the wall-clock time they are sent at: the worker rejects event
            # times too far ahead of its clock, and a demo should look like now.
            ev = {**ev, "ts": format_ts_ms(int(time.time() * 1000))}
            producer.send(ev)
            sent += 1
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
            now = time.monotonic()
            if live_view is not None and sent % 20 == 0:
                live_view.update(_table(board, started, sent))
            elif live_view is None and not quiet and now - last_note > 2:
                say(f"  sent {sent}, scored {board.scored}")
                last_note = now
        producer.flush()
        deadline = time.monotonic() + 60
        while events is not None and board.scored < sent and time.monotonic() < deadline:
            time.sleep(0.1)
            if live_view is not None:
                live_view.update(_table(board, started, sent))
        if events is not None and board.scored < sent:
            raise LeadscoreError(f"only {board.scored} of {sent} events were scored within 60 s")
    except KeyboardInterrupt:
        say("stopping ...")
    finally:
        if live_view is not None:
            live_view.update(_table(board, started, sent))
            live_view.stop()
    return sent
