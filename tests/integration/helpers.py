"""Helpers of the integration tests: a spawned worker, reading and producing to topics,
waiting for the worker's group to catch up, the offline replay to compare features with."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from leadscore.infra.topics import INPUT_TOPICS, end_offsets
from leadscore.settings import Settings

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
"""The local PostgreSQL the sink tests write to (trust auth, database ``test``)."""


def pg_available() -> bool:
    import psycopg

    try:
        psycopg.connect(PG_DSN, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


BUCKET = "tansu"
"""The bucket the ``object_store`` fixture creates in moto's S3 server."""


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

    def request(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        data = None if body is None else orjson.dumps(body)
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        req = urllib.request.Request(  # noqa: S310 - loopback
            self.url + path, data=data, method=method, headers=hdrs
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class ApiProcess(WorkerProcess):
    """A running ``leadscore api``."""

    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def store_features(s: Settings, leads: list[str]) -> dict[str, dict | None]:
    """Each lead's features as the feature store in Redis holds them (read as the API does:
    the workers' state generation, never a new one)."""
    import asyncio

    from leadscore.features.store import RedisFeatureStore
    from leadscore.infra.redis import redis_client

    async def read() -> dict[str, dict | None]:
        client = redis_client(s)
        store = RedisFeatureStore(client, per_slot=s.redis_cluster)
        try:
            status = await store.marker.status()
            assert status.generation, "no feature state in Redis"
            store.generation = status.generation
            return {lead: await store.read(lead) for lead in leads}
        finally:
            await store.close()
            await client.aclose()

    return asyncio.run(read())


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


#: Social comments of each sentiment (positive, negative, neutral for VADER).
COMMENT_TEXTS = (
    "Great demo, exactly what we need!",
    "Terrible onboarding, very disappointed.",
    "Which regions do you support?",
)


#: What enrichment providers send: topics (configured, spelled otherwise, not configured),
#: scores around the surge cut-off, technology lists, firmographics with and without values.
INTENT_TOPICS_SENT = ("Lead Scoring", "marketing automation", "CRM-Software", "ERP", "payroll")
INTENT_SCORES_SENT = (12, 45.5, 59.99, 60, 71.25, 88, 100)
TECH_LISTS_SENT: tuple[list[str], ...] = (
    ["Salesforce", "Snowflake", "Looker"],
    ["HubSpot", "Intercom", "Shopify", "Stripe"],
    [],
    ["Marketo", "salesforce", "Tableau", "Zendesk", "SAP"],
)


def enrichment_attributes(typ: str, k: int) -> dict[str, object]:
    """Attributes of an enrichment event of type ``typ``, varied by ``k``."""
    if typ == "intent":
        return {
            "topic": INTENT_TOPICS_SENT[k % len(INTENT_TOPICS_SENT)],
            "score": INTENT_SCORES_SENT[k % len(INTENT_SCORES_SENT)],
            "provider": "bombora",
        }
    if typ == "technographics":
        return {"technologies": TECH_LISTS_SENT[k % len(TECH_LISTS_SENT)]}
    out: dict[str, object] = {"employees": [12, 250, 4_800, None][k % 4]}
    if k % 3:
        out["revenue_band"] = ["1M-10M", "50M-250M", None][k % 3]
    if k % 5:
        out["industry_code"] = ["541511", "52", "611310", None][k % 4]
    return out


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
        elif typ == "comment":  # not from rng: a seed draws the same events as before texts
            attrs = {"text": COMMENT_TEXTS[i % len(COMMENT_TEXTS)]}
        elif src == "enrichment":
            attrs = enrichment_attributes(typ, i)
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
        TopicPartition(s.topic(src), p) for src in INPUT_TOPICS for p in range(s.topic_partitions)
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


def committed_total(s: Settings) -> int:
    """Input offsets the worker group (``s.app_id``) has committed, summed over partitions."""
    c = Consumer({**s.kafka_client_config(), "group.id": s.app_id, "enable.auto.commit": False})
    try:
        committed = c.committed(_input_partitions(s), timeout=10)
    finally:
        c.close()
    return sum(max(tp.offset, 0) for tp in committed)


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
    """Every record of ``leads.<name>`` up to the current end of each partition (values;
    None for a tombstone).

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
                out.append(None if m.value() is None else orjson.loads(m.value()))
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


def as_events(events: list[dict]) -> list:
    """Event envelopes (as produced) as the validated ``Event`` records the store takes
    (a social comment's text replaced by its sentiment, as validation does)."""
    from leadscore.schemas.sentiment import replace_text
    from leadscore.schemas.validation import Event, parse_ts_ms

    evs = []
    for e in events:
        ts_ms = parse_ts_ms(e["ts"])
        assert ts_ms is not None
        attrs = dict(e["attributes"])
        if e["source"] == "social":
            assert replace_text(attrs) is None
        evs.append(
            Event(e["event_id"], e["lead_id"], e["source"], e["type"], e["ts"], ts_ms, attrs)
        )
    return evs


def offline_features(events: list[dict]) -> dict[str, dict]:
    """Each lead's features from the reference (offline) replay of ``events``."""
    from leadscore.features.offline import replay

    return {lead: state.features() for lead, state in replay(as_events(events)).items()}


def assert_features_match_replay(worker: WorkerProcess, events: list[dict]) -> None:
    expected = offline_features(events)
    stored = store_features(worker.settings, list(expected))
    wrong = [lead for lead, feats in expected.items() if stored[lead] != feats]
    assert wrong == [], f"{len(wrong)}/{len(expected)} leads differ from the replay: {wrong[:3]}"


class Feeder(threading.Thread):
    """Sends a burst, then a steady stream until stopped, so the worker is mid-stream whenever
    the test freezes or kills it. Sending everything up front let a fast worker drain the input
    before the test froze it: no batch was ever caught between its Redis update and its
    delivery. A steady stream also makes every freeze leave a backlog for the next thaw."""

    def __init__(
        self, s: Settings, events: list[dict], *, burst: int = 4_000, rate: float = 2_000.0
    ) -> None:
        super().__init__(daemon=True)
        self.s, self.events = s, events
        self.burst, self.rate = burst, rate
        self.sent = 0
        self.errors: list = []
        self._halt = threading.Event()

    def run(self) -> None:
        from leadscore.infra.producer import EventProducer

        producer = EventProducer(self.s)
        start = time.monotonic()
        for n, event in enumerate(self.events, start=1):
            if self._halt.is_set():
                break
            producer.send(event)
            self.sent = n
            ahead = (n - self.burst) / self.rate - (time.monotonic() - start)
            if n > self.burst and ahead > 0:
                self._halt.wait(ahead)
        producer.flush(60)
        self.errors = producer.errors

    def stop(self) -> list[dict]:
        """Stop sending; the events that reached the broker, in the order sent."""
        self._halt.set()
        self.join(90)
        assert not self.is_alive(), "the feeder did not stop"
        assert self.errors == [], self.errors[:3]
        assert self.sent < len(self.events), "the feeder ran out before the kill"
        return self.events[: self.sent]
