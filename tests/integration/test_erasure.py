"""Issue 28: erasure everywhere, as a user runs it. A worker, the archiver, the CRM sync to
PostgreSQL, the erasure consumer and the API run as ``leadscore`` processes; 2,000 leads
stream in; mid-stream 100 of them are erased (50 by ``leadscore forget``, 50 by requests on
``leads.erasure``), then their events keep coming. Afterwards nothing of them is left in
Redis but the suppression marker, in the archive, or in the PostgreSQL sink; every output
topic read from offset 0 (last value per key) holds only tombstones for them; the audit log
names 100 erasures by keyed hash; every other lead's features equal the offline replay."""

from __future__ import annotations

import hashlib
import hmac
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import psycopg
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from leadscore.features.store import hash_tag
from leadscore.infra.topics import (
    INPUT_TOPICS,
    LEAD_KEYED_OUTPUTS,
    committed_offsets,
    end_offsets,
)
from leadscore.integrations.erase import read_audit
from leadscore.schemas.validation import format_ts_ms, validate_record
from leadscore.settings import Settings
from leadscore.tooling.embedded import settings_env, spawn_command

from .helpers import (
    PG_DSN,
    assert_features_match_replay,
    metric_total,
    pg_available,
    produce,
    recent_events,
    store_features,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

KEY = "erasure-test-privacy-key"


def _lag(s: Settings, group: str, topics: list[str]) -> int:
    parts = [(t, p) for t in topics for p in range(s.topic_partitions)]
    ends = end_offsets(s, parts)
    committed = committed_offsets(s, parts, group)
    return sum(max(ends[tp] - committed[tp], 0) for tp in parts)


def _wait(what: str, done, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            tails = "\n".join(f"{p.name}: {p.read_text()[-1500:]}" for p in logs)
            pytest.fail(f"{what} not within {timeout} s\n{tails}")
        time.sleep(0.5)


def _last_values(s: Settings, name: str) -> dict[bytes, bytes | None]:
    """``leads.<name>`` from offset 0 to its end: the last value per key (what compaction
    keeps; the embedded broker doesn't compact)."""
    topic = s.topic(name)
    ends = end_offsets(s, [(topic, p) for p in range(s.topic_partitions)])
    todo = {p for (_t, p), end in ends.items() if end > 0}
    c = Consumer(
        {**s.kafka_client_config(), "group.id": f"r-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    out: dict[bytes, bytes | None] = {}
    where: dict[bytes, int] = {}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        deadline = time.monotonic() + 60
        while todo and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                if m.key() is not None:
                    # Compaction is per partition: a key must stay on one.
                    assert where.setdefault(m.key(), m.partition()) == m.partition(), m.key()
                    out[m.key()] = m.value()
                if m.offset() + 1 >= ends[(topic, m.partition())]:
                    todo.discard(m.partition())
        assert not todo, f"{topic}: partitions {todo} not read to the end"
    finally:
        c.close()
    return out


def _later_events(leads: list[str], n: int, seed: int, *, each: bool = False) -> list[dict]:
    """Page views and e-mail opens of ``leads`` (``each``: one per lead, in order) from the
    last hour."""
    rng = random.Random(seed)
    now = int(time.time() * 1000) - 60_000
    kinds = [("web", "page_view"), ("email", "email_open")]
    return [
        {
            "event_id": f"late-{uuid.uuid4().hex}",
            "lead_id": leads[i] if each else rng.choice(leads),
            "source": src,
            "type": typ,
            "ts": format_ts_ms(now - rng.randint(0, 3_600_000)),
            "attributes": {},
        }
        for i, (src, typ) in enumerate(rng.choice(kinds) for _ in range(n))
    ]


def test_erasure_removes_leads_everywhere_while_streaming(
    settings_factory, worker_factory, api_factory, tmp_path
):
    if not pg_available():
        pytest.skip(f"no PostgreSQL at {PG_DSN}: the sink this test checks")
    root = tmp_path / "archive"
    s = settings_factory(archive_root=str(root), privacy_key=KEY)
    logs = [tmp_path / f"{n}.log" for n in ("archive", "sync", "erasure")]
    procs = [
        spawn_command(s, logs[0], "archive", "--flush-seconds", "1"),
        spawn_command(s, logs[1], "sync", "--sink", PG_DSN),
        spawn_command(s, logs[2], "erasure", "--batch-wait", "1"),
    ]
    try:
        worker = worker_factory(s)
        api = api_factory(s)
        events = recent_events(2_000, 8_000, seed=2828)
        tag = events[0]["lead_id"].rsplit("-", 1)[0]
        leads = [f"{tag}-{i}" for i in range(2_000)]
        events = _later_events(leads, 2_000, seed=3, each=True) + events
        random.Random(4).shuffle(events)
        assert {e["lead_id"] for e in events} == set(leads)
        erased = random.Random(28).sample(leads, 100)
        by_cli, by_topic = erased[:50], erased[50:]
        produce(s, events[:6_000])

        # Mid-stream: the rest streams in while both kinds of erasure run.
        feeder = threading.Thread(target=produce, args=(s, events[6_000:]), kwargs={"rate": 1_000})
        feeder.start()
        time.sleep(1.0)
        forget = subprocess.run(  # noqa: S603 - our own CLI, as a user runs it
            [sys.executable, "-P", "-m", "leadscore", "forget", *by_cli, "--json"],
            env=settings_env(s),
            capture_output=True,
            timeout=180,
            check=False,
        )
        assert forget.returncode == 0, forget.stderr.decode()[-2000:]
        assert orjson.loads(forget.stdout.splitlines()[-1])["erased"] == 50
        request = subprocess.run(  # noqa: S603
            [sys.executable, "-P", "-m", "leadscore", "forget", "--via-topic", *by_topic],
            env=settings_env(s),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert request.returncode == 0, request.stderr.decode()[-2000:]
        feeder.join(120)
        assert not feeder.is_alive()
        _wait("100 audit records", lambda: len(read_audit(s)) >= 100, 120, logs)

        # After the erasure: more events of the erased leads (dropped) and of others.
        later = _later_events(erased, 300, seed=1) + _later_events(leads[:50], 100, seed=2)
        produce(s, later)
        wait_caught_up(s, [worker], timeout=120)
        inputs = [s.topic(t) for t in INPUT_TOPICS]
        _wait("archiver caught up", lambda: _lag(s, f"{s.app_id}-archive", inputs) == 0, 90, logs)
        _wait(
            "CRM sync caught up",
            lambda: _lag(s, f"{s.app_id}-crm-sync", [s.topic("scores")]) == 0,
            90,
            logs,
        )
        for p in procs:
            assert p.poll() is None, f"a service exited: {p.args}"

        gone = set(erased)
        late_erased = sum(1 for e in later if e["lead_id"] in gone)
        assert metric_total(worker, "erased") >= late_erased

        # Redis: only the suppression marker is left of each erased lead.
        r = redis.Redis.from_url(s.redis_url or "")
        by_lead: dict[str, set[str]] = {}
        for key in r.scan_iter(match=f"ls:{{{tag}-*", count=10_000):
            text = key.decode()
            lead = text[len("ls:{") : text.rindex("}")]
            by_lead.setdefault(lead, set()).add(text.rsplit(":", 1)[1])
        for lead in erased:
            assert by_lead.get(lead) == {"b", "x"}, (lead, by_lead.get(lead))
            marker = r.get(f"ls:{hash_tag(lead)}:b")
            assert marker is not None and marker[:4] == b"\x81\xa1x\xd3" and len(marker) == 12
            assert 0 < r.ttl(f"ls:{hash_tag(lead)}:b") <= s.erasure_suppress_days * 86_400
        assert store_features(s, erased) == dict.fromkeys(erased)
        for lead in erased[:3]:
            assert api.get(f"/leads/{lead}")[0] == 404
        assert api.get(f"/leads/{leads[0] if leads[0] not in gone else leads[1]}")[0] == 200

        # The archive: none of their events, every event of the others.
        import pyarrow.parquet as pq

        files = sorted(root.rglob("part-*.parquet"))
        assert files
        archived_ids: set[str] = set()
        for f in files:
            t = pq.read_table(f).to_pydict()
            assert not gone & set(t["lead_id"]), f
            assert not any(lead.encode() in v for v in t["value"] for lead in erased[:10]), f
            archived_ids.update(t["event_id"])
        kept = [e for e in events + later if e["lead_id"] not in gone]
        assert {e["event_id"] for e in kept} <= archived_ids

        # The PostgreSQL sink: no row of them, a row for every other lead.
        with psycopg.connect(PG_DSN) as conn:
            rows = conn.execute(
                "SELECT lead_id FROM lead_scores WHERE lead_id = ANY(%s)", (leads,)
            ).fetchall()
        synced = {row[0] for row in rows}
        assert not synced & gone
        assert synced == set(leads) - gone

        # Every output topic keyed by lead: last value per key is a tombstone for each.
        for name in LEAD_KEYED_OUTPUTS:
            last = _last_values(s, name)
            left = {x: last.get(x.encode(), b"missing") for x in erased}
            assert {x: v for x, v in left.items() if v is not None} == {}, name
        scores = _last_values(s, "scores")
        assert all(scores.get(lead.encode()) for lead in leads if lead not in gone)

        # The audit log: one record per erasure, the lead named by its keyed hash only.
        audit = read_audit(s)
        assert len(audit) == 100
        for a in audit:
            validate_record("erasure_audit", a)
        want = {hmac.new(KEY.encode(), x.encode(), hashlib.sha256).hexdigest() for x in erased}
        assert {a["lead_hash"] for a in audit} == want
        assert sorted(a["requested_by"] for a in audit) == ["cli"] * 50 + ["topic"] * 50
        blob = orjson.dumps(audit)
        assert not any(lead.encode() in blob for lead in erased)
        assert all(a["archive_events_removed"] is not None for a in audit)

        # Everyone else: exactly the offline replay of their events.
        assert_features_match_replay(worker, kept)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
