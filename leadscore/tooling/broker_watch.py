"""The embedded broker's watchdog, for ``leadscore up``.

Tansu's in-memory storage (the embedded broker) keeps every record batch it is sent and, on
each fetch that finds new data in a partition, lists every batch that partition holds; it
deletes none (no retention, DeleteRecords unimplemented). So each fetch costs more than the
last, and event-to-score latency grows with the batches written until only a fresh broker
brings it back (docs/performance.md: the root cause and the measured limit). Nothing is lost
while it slows, so the policy is to say so early, with what to do, rather than restart a
broker under producers that may have sent events the worker hasn't read yet.

Every ``WATCH_INTERVAL_S`` the watch reads the records stored in the input topics (their end
offsets: records, so at least the batches, one each when every event is its own produce
request) and, from the worker's ``/metrics``, how many events of the interval took over
``P99_LIMIT_S`` from produce to score.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaException

from leadscore.infra.topics import end_offsets
from leadscore.schemas import SOURCES
from leadscore.settings import Settings

WATCH_INTERVAL_S = 10.0
"""Seconds between two readings."""

P99_LIMIT_S = 0.05
"""The latency the embedded mode promises at the 99th percentile, produce to score."""

STORED_LIMIT = 8_000
"""Batches stored in the input topics past which p99 has been measured over ``P99_LIMIT_S``
at 1,000 events/s sent one request each, at best: on a busy machine it is over from the
start (docs/performance.md, "The embedded broker")."""

WARN_SHARE = 0.8
"""Warn once this share of ``STORED_LIMIT`` is stored, before the limit itself."""

_HISTOGRAM = "leadscore_event_to_score_seconds"


@dataclass(frozen=True)
class Reading:
    """One look at the broker and the worker."""

    stored: int
    """Records stored in the input topics (at least the batches there)."""
    events: float | None
    """Events the worker scored since the previous reading (``None``: no worker watched)."""
    slow: float
    """Of those, the ones that took longer than ``P99_LIMIT_S``."""
    arrived: int = 0
    """Records stored since the previous reading."""


def slow_share(
    before: list[tuple[float, float]], after: list[tuple[float, float]], limit_s: float
) -> tuple[float, float]:
    """``(events, events over limit_s)`` observed between two snapshots of a cumulative
    histogram's ``(upper bound, count)`` buckets; ``limit_s`` must be a bucket bound."""
    total_before = before[-1][1] if before else 0.0
    total_after = after[-1][1] if after else 0.0
    within_before = next((c for b, c in before if b == limit_s), 0.0)
    within_after = next((c for b, c in after if b == limit_s), 0.0)
    events = total_after - total_before
    return events, events - (within_after - within_before)


def verdict(reading: Reading, stored_limit: int = STORED_LIMIT) -> str | None:
    """What to tell the user about ``reading``, or ``None`` while all is well."""
    limit_ms = P99_LIMIT_S * 1000
    if reading.events == 0 and reading.arrived > 0:
        # Tansu stops listing a partition when the fetch's max wait is up, and then answers
        # with nothing: past some size a consumer with a short wait never gets a record again.
        return (
            f"the embedded broker has stalled: {reading.arrived:,} events arrived since the "
            f"last look and none was scored ({reading.stored:,} records stored). Its fetches "
            "now take longer than the worker waits (LEADSCORE_FETCH_MAX_WAIT_MS), so it "
            "answers them with nothing. The unscored events are only in the broker's memory: "
            'stopping `leadscore up` now loses them (docs/performance.md, "The embedded '
            'broker"). For long runs, point LEADSCORE_KAFKA_BOOTSTRAP at a Kafka cluster.'
        )
    events = reading.events or 0.0
    over_p99 = events > 0 and reading.slow > 0.01 * events
    near = reading.stored >= WARN_SHARE * stored_limit
    if not (over_p99 or near):
        return None
    what = (
        f"{reading.slow:,.0f} of the last {events:,.0f} events took over "
        f"{limit_ms:.0f} ms from produce to score"
        if over_p99
        else f"{reading.stored:,} records are stored, near the {stored_limit:,} batches at "
        f"which its p99 was measured to pass {limit_ms:.0f} ms"
    )
    return (
        f"the embedded broker is slowing down: {what}. It keeps every batch in memory and "
        "reads them all on each fetch, so it only gets slower. Nothing is lost, but to make it "
        "fast again: stop sending, wait until every event is scored, then restart "
        "`leadscore up` (a fresh broker and Redis: the data is in memory only). For a long "
        "run, point LEADSCORE_KAFKA_BOOTSTRAP at a Kafka cluster instead."
    )


def histogram_buckets(port: int, name: str) -> list[tuple[float, float]]:
    """The cumulative ``(upper bound, count)`` buckets of a Prometheus histogram on the
    worker's ``/metrics`` (the bench reads its own through this too)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    out: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out.append((float(le), float(line.rsplit(" ", 1)[1])))
    return out


def stored_records(settings: Settings, topics: list[str]) -> int:
    """Records stored in ``topics``: the sum of their partitions' end offsets (the embedded
    broker deletes nothing, so every offset is still held). Tansu's ListOffsets answer stops
    at the last batch's base offset, so :func:`end_offsets` reads the true end."""
    parts = [(t, p) for t in topics for p in range(settings.topic_partitions)]
    return sum(end_offsets(settings, parts, timeout=10.0).values())


class BrokerWatch:
    """Reads the embedded broker and the worker every ``interval_s`` and says when the
    broker nears or passes its limit (each distinct warning once a minute at most)."""

    def __init__(
        self,
        settings: Settings,
        say: Callable[[str], None],
        *,
        worker_port: int | None,
        interval_s: float = WATCH_INTERVAL_S,
        stored_limit: int = STORED_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._worker_port = worker_port
        self._say = say
        self._interval_s = interval_s
        self._stored_limit = stored_limit
        self._clock = clock
        self._topics = [settings.topic(s) for s in SOURCES]
        self._hist: list[tuple[float, float]] | None = None
        self._stored: int | None = None
        self._next = clock()
        self._last_said = -float("inf")

    def read(self) -> Reading:
        """One reading (the latency part covers the time since the previous one; none without
        a worker's port)."""
        events: float | None = None
        slow = 0.0
        if self._worker_port is not None:
            hist = histogram_buckets(self._worker_port, _HISTOGRAM)
            if self._hist is not None:
                events, slow = slow_share(self._hist, hist, P99_LIMIT_S)
            self._hist = hist
        stored = stored_records(self._settings, self._topics)
        arrived = 0 if self._stored is None else stored - self._stored
        self._stored = stored
        return Reading(stored, events, slow, arrived)

    def poll(self) -> str | None:
        """Read if a reading is due; say and return the warning, if any."""
        now = self._clock()
        if now < self._next:
            return None
        self._next = now + self._interval_s
        try:
            message = verdict(self.read(), self._stored_limit)
        except (OSError, KafkaException, ValueError, IndexError) as exc:
            # A watchdog that can't read says so once in a while and never stops the stack.
            message = f"the embedded broker's watchdog could not read: {exc}"
        if message is not None and now - self._last_said >= 60.0:
            self._last_said = now
            self._say(message)
        return message
