"""The soak summary of ``leadscore bench``: worker memory sampled through the fixed-rate run."""

from __future__ import annotations

import pytest

from streamer.bench import RSS_SAMPLE_S, _rss_summary


def test_flat_memory_has_no_growth() -> None:
    s = _rss_summary([300.0, 301.0, 300.0, 301.0, 300.0, 301.0])
    assert s["samples"] == 6 and s["first"] == 300.0 and s["max"] == 301.0
    assert abs(s["growth_mb_per_min"]) < 1.0  # noise of +-1 MB, not a trend


def test_a_leak_shows_as_growth_per_minute() -> None:
    per_sample = 2.0
    samples = [300.0 + per_sample * i for i in range(12)]
    s = _rss_summary(samples)
    assert s["growth_mb_per_min"] == pytest.approx(per_sample * 60 / RSS_SAMPLE_S)
    assert s["last"] == samples[-1]


def test_no_samples_says_so() -> None:
    assert _rss_summary([]) == {"samples": 0}
