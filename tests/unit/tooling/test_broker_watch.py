"""The embedded broker's watchdog: when it warns, from histogram snapshots and stored counts."""

from __future__ import annotations

from leadscore.tooling.broker_watch import (
    P99_LIMIT_S,
    STORED_LIMIT,
    WARN_SHARE,
    Reading,
    slow_share,
    verdict,
)

BOUNDS = (0.01, 0.025, 0.05, 0.1, float("inf"))


def _hist(*counts: float) -> list[tuple[float, float]]:
    return list(zip(BOUNDS, counts, strict=True))


def test_slow_share_counts_the_interval_above_the_limit() -> None:
    before = _hist(10, 20, 30, 40, 50)
    after = _hist(100, 200, 290, 300, 330)  # 280 new events, 260 of them within 50 ms
    assert slow_share(before, after, P99_LIMIT_S) == (280, 20)


def test_quiet_and_fast_says_nothing() -> None:
    assert verdict(Reading(stored=100, events=1000, slow=10)) is None  # exactly 1 %
    assert verdict(Reading(stored=100, events=0, slow=0)) is None


def test_p99_over_the_limit_warns_with_what_to_do() -> None:
    message = verdict(Reading(stored=100, events=1000, slow=11))
    assert message is not None
    assert "11 of the last 1,000 events took over 50 ms" in message
    assert "restart `leadscore up`" in message
    assert "LEADSCORE_KAFKA_BOOTSTRAP" in message


def test_nearing_the_measured_limit_warns_before_latency_does() -> None:
    near = int(WARN_SHARE * STORED_LIMIT)
    assert verdict(Reading(stored=near - 1, events=1000, slow=0)) is None
    message = verdict(Reading(stored=near, events=1000, slow=0))
    assert message is not None
    assert f"{near:,} records are stored" in message


def test_arrivals_with_nothing_scored_is_a_stall_that_says_not_to_stop() -> None:
    message = verdict(Reading(stored=90_000, events=0, slow=0, arrived=10_000))
    assert message is not None and message.startswith("the embedded broker has stalled")
    assert "stopping `leadscore up` now loses them" in message
    # Without a worker to watch, arrivals alone say nothing about a stall.
    assert verdict(Reading(stored=100, events=None, slow=0, arrived=50)) is None
