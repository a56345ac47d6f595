"""Producing events to their topics (replay, simulate, demo, tests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from leadscore.errors import LeadscoreError
from leadscore.settings import Settings


class EventProducer:
    """Sends event envelopes to ``leads.<source>`` keyed by ``lead_id``, optionally paced."""

    def __init__(self, settings: Settings, *, linger_ms: int = 5) -> None:
        cfg: dict[str, Any] = {
            **settings.kafka_client_config(),
            "linger.ms": linger_ms,
            "queue.buffering.max.messages": 1_000_000,
            "acks": "all",
            "enable.idempotence": False,
        }
        self._producer = Producer(cfg)
        self._settings = settings
        self.sent = 0
        self.errors: list[str] = []

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)
        self.sent += 1

    def send(self, event: dict[str, Any]) -> None:
        topic = self._settings.topic(str(event.get("source")))
        self.send_raw(topic, str(event["lead_id"]).encode(), orjson.dumps(event))

    def send_all(
        self,
        events: Iterable[dict[str, Any]],
        *,
        rate: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        start = time.monotonic()
        n = 0
        for n, ev in enumerate(events, start=1):
            self.send(ev)
            if rate:
                ahead = n / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
            if progress is not None and n % 1000 == 0:
                progress(n)
        return n

    def flush(self, timeout: float = 30.0) -> None:
        left = self._producer.flush(timeout)
        if left:
            self.errors.append(f"{left} messages not delivered within {timeout:.0f} s")

    def close(self, timeout: float = 30.0) -> None:
        """Flush and release the client, so it stops reconnecting once the broker is gone."""
        self.flush(timeout)
        self._producer.close()

    def flush_or_raise(self, timeout: float = 30.0) -> None:
        """Flush, then raise if any event was not delivered: nothing is lost quietly."""
        self.flush(timeout)
        if self.errors:
            raise LeadscoreError(f"{len(self.errors)} events not delivered: {self.errors[0]}")


def replay_file(
    settings: Settings,
    path: Path,
    *,
    rate: float | None = None,
    progress: Callable[[str], None] | None = None,
    counted: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Produce the events of a JSONL file to their topics; return (sent, unroutable).

    A line without a ``lead_id`` and a ``source`` can't be routed by lead: it still goes to
    ``leads.web``, unkeyed, so that the worker's DLQ records why it was refused.
    """
    from leadscore.infra.topics import ensure_topics

    say = progress or (lambda _msg: None)
    if not path.exists():
        raise LeadscoreError(f"{path} does not exist")
    ensure_topics(settings)
    producer = EventProducer(settings)
    bad = 0

    def lines() -> Iterator[dict[str, Any]]:
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
                    bad += 1
                    producer.send_raw(settings.topic("web"), None, line)
                    say(f"  line {n}: no lead_id/source; sent to leads.web for the DLQ")
                    continue
                yield ev

    producer.send_all(lines(), rate=rate, progress=counted or (lambda n: say(f"  sent {n}")))
    producer.flush_or_raise()
    return producer.sent, bad
