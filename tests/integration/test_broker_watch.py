"""The embedded broker's watchdog counts what a real broker holds and warns near the limit."""

from __future__ import annotations

import time

import pytest

from leadscore.tooling.broker_watch import BrokerWatch
from tests.integration.helpers import produce, read_to_end, recent_events

pytestmark = pytest.mark.integration


def test_watch_warns_once_the_broker_holds_near_the_limit(settings_factory) -> None:
    s = settings_factory()
    said: list[str] = []
    now = [0.0]
    watch = BrokerWatch(
        s, said.append, worker_port=None, interval_s=10, stored_limit=50, clock=lambda: now[0]
    )
    events = recent_events(5, 50, seed=27)
    produce(s, events[:39], linger_ms=0)
    assert watch.poll() is None
    assert watch.read().stored == 39
    produce(s, events[39:], linger_ms=0)
    now[0] = 5.0
    assert watch.poll() is None, "read before the interval is up"
    now[0] = 10.0
    message = watch.poll()
    assert message is not None and "50 records are stored" in message, message
    assert said == [message]
    now[0] = 20.0
    assert watch.poll() == message
    assert said == [message], "said again within the minute"


def test_watch_reads_what_a_real_worker_scored(settings_factory, worker_factory) -> None:
    s = settings_factory()
    worker_factory(s)
    watch = BrokerWatch(s, lambda _m: None, worker_port=s.web_port)
    first = watch.read()
    assert (first.stored, first.events, first.arrived) == (0, None, 0)
    events = recent_events(5, 40, seed=28)
    produce(s, events, linger_ms=0)
    deadline = time.monotonic() + 60
    while len(read_to_end(s, "scores", timeout=10)) < len(events):
        assert time.monotonic() < deadline, "the worker did not score every event"
    reading = watch.read()
    assert (reading.stored, reading.arrived) == (40, 40)
    # Every event scored in between was timed from its produce time to its score.
    assert reading.events == 40
    assert 0 <= reading.slow <= 40
