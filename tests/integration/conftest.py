"""Real services for integration tests.

Kafka: ``LEADSCORE_KAFKA_BOOTSTRAP`` if set, else the embedded Tansu broker, else a
testcontainers Kafka where a Docker engine answers. Redis: ``LEADSCORE_REDIS_URL`` if it
answers, else the local one (127.0.0.1:6379), else an embedded redis-server, else
testcontainers. If none can be had the tests fail: they never pass without the services.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from leadscore.infra.topics import end_offsets, ensure_topics
from leadscore.settings import Settings
from leadscore.tooling.embedded import (
    Service,
    free_port,
    redis_answers,
    spawn_worker,
    start_broker,
    start_redis,
)
from leadscore.tooling.exceptions import ServiceStartError

pytestmark = pytest.mark.integration


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means no usable engine
        return False


@pytest.fixture(scope="session")
def service_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="leadscore-it-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def kafka_bootstrap(service_dir: Path) -> Iterator[str]:
    env = os.environ.get("LEADSCORE_KAFKA_BOOTSTRAP")
    if env:
        yield env
        return
    errors = []
    svc: Service | None = None
    try:
        svc = start_broker(service_dir)
    except ServiceStartError as exc:
        errors.append(f"embedded broker: {exc}")
    if svc is not None:
        try:
            yield svc.url
        finally:
            svc.stop()
        return
    if _docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    pytest.fail("no Kafka-protocol broker: " + "; ".join(errors) + "; and no Docker engine")


@pytest.fixture(scope="session")
def redis_url(service_dir: Path) -> Iterator[str]:
    for url in (os.environ.get("LEADSCORE_REDIS_URL"), "redis://127.0.0.1:6379/0"):
        if url and redis_answers(url):
            yield url
            return
    try:
        svc = start_redis(service_dir)
    except ServiceStartError as exc:
        if _docker_available():
            from testcontainers.redis import RedisContainer

            with RedisContainer() as r:
                yield f"redis://{r.get_container_host_ip()}:{r.get_exposed_port(6379)}/0"
            return
        pytest.fail(f"no Redis: {exc}; and no Docker engine")
    try:
        yield svc.url
    finally:
        svc.stop()


@pytest.fixture
def settings_factory(kafka_bootstrap: str, redis_url: str, tmp_path: Path):
    """Settings with a unique topic prefix and app id, so tests never see each other's data."""

    def make(**overrides: object) -> Settings:
        uid = uuid.uuid4().hex[:8]
        base: dict[str, object] = {
            "kafka_bootstrap": kafka_bootstrap,
            "redis_url": redis_url,
            "topic_prefix": f"t{uid}.",
            "app_id": f"leadscore-test-{uid}",
            "model_dir": tmp_path / "models",
            "web_port": free_port(),
            "web_host": "127.0.0.1",
        }
        base.update(overrides)
        s = Settings(**base)  # type: ignore[arg-type]
        ensure_topics(s)
        return s

    return make


@dataclass
class WorkerProcess:
    settings: Settings
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:  # noqa: S310
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def worker_factory(tmp_path: Path):
    workers: list[WorkerProcess] = []

    def start(s: Settings, *, wait_ready: bool = True, timeout: float = 90.0) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(workers)}.log"
        proc = spawn_worker(s, log_path)
        w = WorkerProcess(s, proc, log_path)
        workers.append(w)
        if wait_ready:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"worker exited with {proc.returncode}:\n{w.log_tail()}")
                try:
                    if w.get("/ready")[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"worker not ready in {timeout} s:\n{w.log_tail()}")
                time.sleep(0.3)
        return w

    yield start
    for w in workers:
        w.stop()


def read_topic(s: Settings, name: str, *, until: int, timeout: float = 60.0) -> list[dict]:
    """Read ``leads.<name>`` from the beginning (manual assignment) until ``until`` records."""
    c = Consumer(
        {
            **s.kafka_client_config(),
            "group.id": f"reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    topic = s.topic(name)
    c.assign([TopicPartition(topic, p, 0) for p in range(s.topic_partitions)])
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < until and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            out.append(
                {
                    "key": m.key(),
                    "value": None if m.value() is None else orjson.loads(m.value()),
                    "partition": m.partition(),
                    "offset": m.offset(),
                }
            )
        # Anything beyond ``until`` (a duplicate, say) must show up too: drain a little longer.
        quiet_until = time.monotonic() + 2.0
        while time.monotonic() < quiet_until:
            m = c.poll(0.2)
            if m is not None and not m.error():
                out.append(
                    {
                        "key": m.key(),
                        "value": None if m.value() is None else orjson.loads(m.value()),
                        "partition": m.partition(),
                        "offset": m.offset(),
                    }
                )
                quiet_until = time.monotonic() + 2.0
    finally:
        c.close()
    return out


# --- helpers for the fault-tolerance and scale-out tests -----------------------------------


def recent_events(n_leads: int, n_events: int, seed: int, *, dup_every: int = 0) -> list[dict]:
    """Shuffled event envelopes over the last three days (none late, none in the future).

    Ids carry a fresh uuid because Redis outlives the tests. With ``dup_every`` = k, every
    k-th event is sent a second time with the same id (redelivery from the producer side).
    """
    import random

    from leadscore.schemas import EVENT_TYPES
    from leadscore.schemas.validation import format_ts_ms

    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:10]
    now = int(time.time() * 1000) - 60_000
    kinds = [(src, typ) for src, types in EVENT_TYPES.items() for typ in types]
    events: list[dict] = []
    for i in range(n_events):
        src, typ = rng.choice(kinds)
        ts = now - rng.randint(0, 3 * 86_400_000)
        attrs: dict[str, object] = {}
        if typ in ("lead_created", "lead_updated"):
            attrs = {
                "industry": rng.choice(["saas", "retail", None]),
                "company_size": rng.choice(["1-10", 500]),
                "country": rng.choice(["DE", "US", "BR"]),
            }
        events.append(
            {
                "event_id": f"{tag}-{i}",
                "lead_id": f"F-{tag}-{rng.randint(0, n_leads - 1)}",
                "source": src,
                "type": typ,
                "ts": format_ts_ms(ts),
                "attributes": attrs,
            }
        )
    if dup_every:
        events += [dict(e) for e in events[::dup_every]]
    rng.shuffle(events)
    return events


def produce(
    s: Settings, events: list[dict], *, rate: float | None = None, linger_ms: int = 5
) -> None:
    """Send ``events`` (at ``rate`` per second) and wait until the broker has every one."""
    from leadscore.infra.producer import EventProducer

    producer = EventProducer(s, linger_ms=linger_ms)
    producer.send_all(events, rate=rate)
    producer.flush(60)
    assert producer.errors == [], producer.errors[:3]


def _input_partitions(s: Settings) -> list[TopicPartition]:
    return [
        TopicPartition(s.topic(src), p)
        for src in ("web", "email", "crm")
        for p in range(s.topic_partitions)
    ]


def consumer_lag(s: Settings) -> int:
    """Events on the input topics not yet committed by the worker group (``s.app_id``)."""
    c = Consumer({**s.kafka_client_config(), "group.id": s.app_id, "enable.auto.commit": False})
    try:
        committed = c.committed(_input_partitions(s), timeout=10)
    finally:
        c.close()
    ends = end_offsets(s, [(tp.topic, tp.partition) for tp in committed])
    return sum(max(ends[(tp.topic, tp.partition)] - max(tp.offset, 0), 0) for tp in committed)


def wait_caught_up(s: Settings, workers: list[WorkerProcess], timeout: float) -> None:
    """Wait until the group has committed every input offset (results delivered first)."""
    deadline = time.monotonic() + timeout
    lag = consumer_lag(s)
    while lag > 0:
        for w in workers:
            if w.proc.poll() is not None:
                pytest.fail(f"worker exited with {w.proc.returncode}:\n{w.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{lag} events not committed in {timeout} s:\n{workers[-1].log_tail()}")
        time.sleep(0.5)
        lag = consumer_lag(s)


def read_to_end(s: Settings, name: str, *, timeout: float = 60.0) -> list[dict]:
    """Every record of ``leads.<name>`` up to the current end of each partition (values).

    The ends come from ``end_offsets``: the embedded broker's ListOffsets answer stops short
    of a partition's last batch, and a read that ended there could miss the rest of it. (It
    matches the random-kill test's rare "missing" score records: all among the last records
    of their partitions.)"""
    topic = s.topic(name)
    listed = end_offsets(s, [(topic, p) for p in range(s.topic_partitions)])
    ends = {p: end for (_t, p), end in listed.items()}
    c = Consumer(
        {
            **s.kafka_client_config(),
            "group.id": f"reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        todo = {p for p, end in ends.items() if end > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        out: list[dict] = []
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                pytest.fail(f"{topic}: partitions {sorted(todo)} not read to the end")
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                out.append(orjson.loads(m.value()))
                if m.offset() + 1 >= ends[m.partition()]:
                    todo.discard(m.partition())
        return out
    finally:
        c.close()


def metric_total(worker: WorkerProcess, outcome: str | None = None) -> int:
    """Sum of ``leadscore_events_total`` (optionally one outcome) on the worker's /metrics."""
    _status, body = worker.get("/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("leadscore_events_total{") and (
            outcome is None or f'outcome="{outcome}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def offline_features(events: list[dict]) -> dict[str, dict]:
    """Each lead's features from the reference (offline) replay of ``events``."""
    from leadscore.features.offline import replay
    from leadscore.schemas.validation import Event, parse_ts_ms

    evs = []
    for e in events:
        ts_ms = parse_ts_ms(e["ts"])
        assert ts_ms is not None
        evs.append(
            Event(
                e["event_id"], e["lead_id"], e["source"], e["type"], e["ts"], ts_ms, e["attributes"]
            )
        )
    return {lead: state.features() for lead, state in replay(evs).items()}


def assert_features_match_replay(worker: WorkerProcess, events: list[dict]) -> None:
    expected = offline_features(events)
    wrong = []
    for lead, feats in expected.items():
        status, body = worker.get(f"/leads/{quote(lead, safe='')}")
        if status != 200 or orjson.loads(body)["features"] != feats:
            wrong.append(lead)
    assert wrong == [], f"{len(wrong)}/{len(expected)} leads differ from the replay: {wrong[:3]}"
