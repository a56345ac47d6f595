"""Producing events to their topics (replay, simulate, demo, tests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from confluent_kafka import Producer

from streamer.exceptions import LeadscoreError
from streamer.settings import Settings


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
