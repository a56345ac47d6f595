"""Issue 28, no raw PII at rest: events carrying e-mail addresses, phone numbers, names and IP
addresses (under attribute names such as ``email`` or ``first_name``, and only recognisable
by pattern inside other attributes), valid ones and invalid ones, go through the embedded
broker, a worker and the archiver. None of those strings is then in Redis (every key of the
database read back by its type, the state blobs decoded from MessagePack), the archive's
Parquet files (every column), ``leads.scores``, ``leads.dlq``, or any log. The redacted
values do arrive (pseudonyms in Redis, the archive and the DLQ), and the archive reads back
into the events the worker scored, with the same features."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pyarrow.parquet as pq
import pytest
import redis

from leadscore.features.offline import replay
from leadscore.features.store import lead_keys
from leadscore.infra.producer import EventProducer
from leadscore.jobs.history import load_events
from leadscore.schemas.validation import Event, format_ts_ms, validate_event, validate_record
from leadscore.settings import Settings
from leadscore.tooling.embedded import settings_env

from .helpers import read_to_end, store_features, wait_caught_up

pytestmark = pytest.mark.integration

#: The worker, archiver and redaction settings of this test. Emptying the two lists (no
#: names, no patterns: nothing redacted) must make the test fail: checked by hand.
PRIVACY = {
    "privacy_key": "integration-test-privacy-key-2026",
    "log_level": "DEBUG",  # the most the processes ever log
}
N_LEADS = 16


def _msgpack(data: bytes) -> Any:
    """Decode one MessagePack value (what Redis's cmsgpack writes), all of ``data``."""
    value, end = _unpack(data, 0)
    assert end == len(data), "trailing bytes after the MessagePack value"
    return value


def _unpack(b: bytes, i: int) -> tuple[Any, int]:
    t = b[i]
    i += 1
    if t <= 0x7F:
        return t, i
    if 0x80 <= t <= 0x8F or t in (0xDE, 0xDF):
        n, i = (t & 0x0F, i) if t <= 0x8F else _length(b, i, 2 if t == 0xDE else 4)
        out = {}
        for _ in range(n):
            k, i = _unpack(b, i)
            out[k if not isinstance(k, dict | list) else repr(k)], i = _unpack(b, i)
        return out, i
    if 0x90 <= t <= 0x9F or t in (0xDC, 0xDD):
        n, i = (t & 0x0F, i) if t <= 0x9F else _length(b, i, 2 if t == 0xDC else 4)
        items = []
        for _ in range(n):
            v, i = _unpack(b, i)
            items.append(v)
        return items, i
    if 0xA0 <= t <= 0xBF or t in (0xD9, 0xDA, 0xDB, 0xC4, 0xC5, 0xC6):
        if t <= 0xBF:
            n = t & 0x1F
        else:
            n, i = _length(b, i, {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4}[t])
        raw = b[i : i + n]
        return (raw.decode("utf-8") if t < 0xC4 or t > 0xC6 else raw), i + n
    if t >= 0xE0:
        return t - 0x100, i
    fixed = {
        0xC0: (None, 0),
        0xC2: (False, 0),
        0xC3: (True, 0),
        0xCA: (">f", 4),
        0xCB: (">d", 8),
        0xCC: (">B", 1),
        0xCD: (">H", 2),
        0xCE: (">I", 4),
        0xCF: (">Q", 8),
        0xD0: (">b", 1),
        0xD1: (">h", 2),
        0xD2: (">i", 4),
        0xD3: (">q", 8),
    }
    if t not in fixed:
        raise ValueError(f"MessagePack type 0x{t:02x} at {i - 1}")
    fmt, size = fixed[t]
    if not isinstance(fmt, str):
        return fmt, i
    return struct.unpack(fmt, b[i : i + size])[0], i + size


def _length(b: bytes, i: int, size: int) -> tuple[int, int]:
    return int.from_bytes(b[i : i + size], "big"), i + size


def _strings(value: Any) -> list[str]:
    """Every string (and bytes, decoded) inside a decoded value, keys included."""
    if isinstance(value, bytes):
        return [value.decode("utf-8", "replace")]
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


def _redis_texts(url: str, ours: set[bytes]) -> tuple[list[str], dict[bytes, Any]]:
    """Every value in the database as text (each key read by its type; never DUMP), and the
    decoded state blob of each of ``ours``' keys."""
    client = redis.Redis.from_url(url)
    texts: list[str] = []
    states: dict[bytes, Any] = {}
    try:
        keys = list(client.scan_iter(count=1000))
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            pipe = client.pipeline(transaction=False)
            for key in chunk:
                pipe.type(key)
            types = pipe.execute()
            pipe = client.pipeline(transaction=False)
            for key, kind in zip(chunk, types, strict=True):
                _queue_read(pipe, key, kind)
            for key, value in zip(chunk, pipe.execute(), strict=True):
                texts.append(key.decode("utf-8", "replace"))
                texts += _strings(value)
                if key.endswith(b":b") and isinstance(value, bytes):
                    try:
                        decoded = _msgpack(value)
                    except (ValueError, IndexError, UnicodeDecodeError):
                        assert key not in ours, f"{key!r} is not MessagePack"
                        continue
                    texts += _strings(decoded)
                    if key in ours:
                        states[key] = decoded
    finally:
        client.close()
    return texts, states


def _queue_read(pipe: Any, key: bytes, kind: bytes) -> None:
    """Queue the command that reads ``key``'s whole value for its type."""
    if kind == b"string":
        pipe.get(key)
    elif kind == b"hash":
        pipe.hgetall(key)
    elif kind == b"zset":
        pipe.zrange(key, 0, -1, withscores=True)
    elif kind == b"set":
        pipe.smembers(key)
    elif kind == b"list":
        pipe.lrange(key, 0, -1)
    elif kind == b"stream":
        pipe.xrange(key)
    else:
        assert kind == b"none", (key, kind)  # expired since the scan
        pipe.exists(key)


def _parquet_texts(root: Path) -> tuple[list[str], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(root.rglob("*.parquet")):
        rows += pq.read_table(path).to_pylist()  # every column
    return [s for row in rows for s in _strings(row)], rows


Bad = list[tuple[bytes | None, bytes, str]]


def _envelope(eid: str, lead: str, source: str, typ: str, ts_ms: int, attrs: dict) -> dict:
    return {
        "event_id": eid,
        "lead_id": lead,
        "source": source,
        "type": typ,
        "ts": format_ts_ms(ts_ms),
        "attributes": attrs,
    }


def _events(tag: str) -> tuple[list[dict], Bad, list[dict[str, str]]]:
    """Valid events, invalid messages (key, value, topic suffix), and the people in them."""
    digits = f"{int(tag, 16) % 10_000:04d}"
    net = int(tag[:4], 16)
    people: list[dict[str, str]] = []
    now = int(time.time() * 1000) - 3_600_000
    events: list[dict] = []

    def person(i: int) -> dict[str, str]:
        p = {
            "email": f"pii.{tag}.{i}@example.com",
            "email2": f"Zelda.{tag}.{i}@mail.example.org",
            "phone": f"+1 (415) {200 + i:03d}-{digits}",
            "phone2": f"415.{300 + i:03d}.{digits}",
            "phone3": f"+44 20 7{400 + i:03d} {digits}",
            "first": f"Zelda{tag[:6]}x{i}",
            "last": f"Quartermain{tag[6:]}y{i}",
            "ip": f"10.{net // 256}.{net % 256}.{i + 1}",
            "ip6": f"2001:db8:{tag[:4]}::{i + 1:x}",
        }
        people.append(p)
        return p

    for i in range(N_LEADS):
        p = person(i)
        lead = f"P-{tag}-{i}"

        def ev(n: int, source: str, typ: str, attrs: dict, lead: str = lead) -> dict:
            return _envelope(f"{lead}-{n}", lead, source, typ, now + 60_000 * n, attrs)

        events += [
            ev(
                0,
                "crm",
                "lead_created",
                {
                    "email": p["email"],
                    "first_name": p["first"],
                    "LastName": p["last"],
                    "phone": p["phone"],
                    "company_size": "1001-5000",
                    "industry": "Software",
                    "job_title": f"CTO ({p['email2']})" if i % 2 else "VP Sales",
                    "country": "DE",
                    "lead_source": "Webinar",
                    "notes": f"call {p['phone2']} or write to {p['email2']}",
                    "contact": {"Mobile": p["phone3"], "Full Name": f"{p['first']} {p['last']}"},
                    "ip_address": p["ip"],
                },
            ),
            ev(
                1,
                "web",
                "page_view",
                {
                    "url": f"https://example.com/contact?email={quote(p['email'])}&tel={p['phone2']}",
                    "duration_s": 12.5,
                    "session_id": "ws-0123456789ab",
                    "client": {"addresses": [p["ip6"], p["ip"]]},
                },
            ),
            ev(2, "web", "pricing_view", {"url": "/pricing", "duration_s": 42}),
            ev(3, "email", "email_click", {"link": f"https://example.com/u?who={p['email']}"}),
            ev(4, "crm", "lead_updated", {"job_title": f"Head of Sales, {p['phone3']}"}),
        ]
    p = person(99)
    base = {**events[0], "event_id": f"{tag}-bad"}
    leaky = {"email": p["email"], "note": f"ring {p['phone']}", "first_name": p["first"]}
    bad: Bad = [
        (b"k1", orjson.dumps({**base, "type": "lead_creatd", "attributes": leaky}), "crm"),
        (b"k2", orjson.dumps({**base, "source": p["email2"]}), "crm"),  # quoted in the error
        (b"k3", orjson.dumps({**base, "ts": f"{p['phone2']} {p['ip']}"}), "crm"),
        (b"someone-else", orjson.dumps({**base, "attributes": leaky}), "crm"),
        (b"k5", orjson.dumps({k: v for k, v in base.items() if k != "lead_id"}), "crm"),
        (b"k6", orjson.dumps({**base, "attributes": [p["email"], p["ip6"]]}), "crm"),
        (b"k7", f"name={p['first']} {p['last']}; mail={p['email']}".encode(), "web"),
        (b"k8", orjson.dumps([p["email"], p["phone"]]), "email"),
    ]
    return events, bad, people


def _leaks(texts: list[str], secrets: list[str]) -> list[tuple[str, str]]:
    blob = "\n".join(texts)
    return [(s, blob[max(0, blob.find(s) - 80) : blob.find(s) + 80]) for s in secrets if s in blob]


def test_no_raw_pii_in_redis_the_archive_the_topics_or_the_logs(
    settings_factory, worker_factory, redis_url, tmp_path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    s: Settings = settings_factory(**PRIVACY)
    redactor = s.redactor
    tag = uuid.uuid4().hex[:12]
    events, bad, people = _events(tag)
    secrets = [v for p in people for v in p.values()]
    secrets += ["".join(c for c in p["phone"] if c.isdigit()) for p in people]

    root = tmp_path / "archive"
    archiver_log = tmp_path / "archiver.log"
    with archiver_log.open("wb") as fh:
        archiver = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-P", "-m", "leadscore", "archive", "--root", str(root)]
            + ["--flush-seconds", "1", "--idle-exit", "4"],
            env=settings_env(s),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        worker = worker_factory(s)
        producer = EventProducer(s)
        for e in events:
            producer.send(e)
        for key, value, source in bad:
            producer.send_raw(s.topic(source), key, value)
        producer.flush(30)
        assert producer.errors == []
        wait_caught_up(s, [worker], timeout=60)
        assert archiver.wait(60) == 0, archiver_log.read_text()
    finally:
        if archiver.poll() is None:
            archiver.kill()
            archiver.wait(10)

    scores = read_to_end(s, "scores")
    assert sorted(r["event_id"] for r in scores) == sorted(e["event_id"] for e in events)
    dlq = read_to_end(s, "dlq")
    assert len(dlq) == len(bad)

    leads = [f"P-{tag}-{i}" for i in range(N_LEADS)]
    ours = {lead_keys(lead).state.encode(): lead for lead in leads}
    redis_texts, states = _redis_texts(redis_url, set(ours))

    archive_texts, rows = _parquet_texts(root)
    assert {r["event_id"] for r in rows} == {e["event_id"] for e in events}

    logs = [
        worker.log_path.read_text(errors="replace"),
        archiver_log.read_text(errors="replace"),
        caplog.text,
    ]
    assert "DEBUG" in logs[0], "the worker's log is not where the test reads it"
    places = {
        "redis": redis_texts,
        "archive": archive_texts,
        "leads.scores": [orjson.dumps(r).decode() for r in scores],
        "leads.dlq": [orjson.dumps(r).decode() for r in dlq],
        "logs": logs,
    }
    found = {place: _leaks(texts, secrets) for place, texts in places.items()}
    assert found == {place: [] for place in places}, found

    # The redacted values arrive where the originals would have been.
    assert len(states) == N_LEADS, "not every lead's state blob was read and decoded"
    for key, state in states.items():
        i = int(ours[key].rsplit("-", 1)[1])
        title = f"Head of Sales, {redactor.token(people[i]['phone3'])}"
        assert title in _strings(state), (title, state)
    assert any(redactor.token(people[1]["email2"]) in t for t in archive_texts)
    for rec in dlq:
        validate_record("dlq", rec)
        assert rec["value_redacted"]
    assert any(redactor.token(people[-1]["email2"]) in r["error_message"] for r in dlq)
    assert sum(r["value"] is None for r in dlq) == 2  # not JSON, and not an object

    # The archive reads back into the events the worker scored (redacted alike), and their
    # offline features are the ones in Redis.
    expected = [
        validate_event(
            orjson.dumps(e),
            topic_source=None,
            key=None,
            now_ms=2**60,
            max_future_ms=0,
            check_key=False,
            redactor=redactor,
        )
        for e in events
    ]
    archived = load_events(str(root), redactor=redactor)
    assert sorted(archived, key=_event_id) == sorted(expected, key=_event_id)
    offline = {lead: state.features() for lead, state in replay(archived).items()}
    assert store_features(s, leads) == offline


def _event_id(ev: Event | object) -> str:
    assert isinstance(ev, Event)
    return ev.event_id
