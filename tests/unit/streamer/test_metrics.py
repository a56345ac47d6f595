"""``observe_many`` must leave a histogram exactly as observing each value would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from leadscore.streamer.metrics import observe_many

BOUNDS = (0.001, 0.01, 0.1, 1.0)


def _state(h: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for metric in h.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def _pair() -> tuple[Histogram, Histogram]:
    return (
        Histogram("one_by_one", "x", buckets=BOUNDS, registry=CollectorRegistry()),
        Histogram("one_by_one", "x", buckets=BOUNDS, registry=CollectorRegistry()),
    )


def test_same_buckets_count_and_sum_as_observing_one_by_one() -> None:
    # Values on bucket bounds, between them, above the last and at zero.
    values = [0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.5, 1.0, 1.5, 30.0, 0.0005, 0.001]
    single, many = _pair()
    for v in values:
        single.observe(v)
    observe_many(many, values)
    a, b = _state(single), _state(many)
    assert a.keys() == b.keys()
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-12), k


def test_nothing_to_observe_changes_nothing() -> None:
    single, many = _pair()
    observe_many(many, [])
    assert _state(many) == _state(single)


def test_a_labelled_histogram_must_be_given_its_child() -> None:
    h = Histogram("staged", "x", ["stage"], buckets=BOUNDS, registry=CollectorRegistry())
    with pytest.raises(ValueError):
        observe_many(h, [0.1])
    observe_many(h.labels(stage="redis"), [0.1, 0.2])
    assert _state(h)["staged_count[('stage', 'redis')]"] == 2


def test_the_workers_registry_has_process_and_gc_metrics() -> None:
    from prometheus_client import generate_latest

    from leadscore.streamer.metrics import Metrics

    text = generate_latest(Metrics.create().registry).decode()
    for name in ("process_resident_memory_bytes", "python_gc_collections_total", "python_info"):
        assert name in text, name
    # A registry a test passes in stays as given.
    own = generate_latest(Metrics.create(CollectorRegistry()).registry).decode()
    assert "process_resident_memory_bytes" not in own
