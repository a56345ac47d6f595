"""Helpers for the monitoring tests: a ``leadscore monitor`` child process, its metrics, and
simulated histories whose leads are unique to one test run."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from leadscore.settings import Settings
from leadscore.tooling.embedded import spawn_command

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def tagged(events: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """The events with ``tag`` before every lead and event id: the simulator numbers its
    leads the same way in every run, and runs share one Redis."""
    out = []
    for e in events:
        e = dict(e)
        e["lead_id"] = f"{tag}{e['lead_id']}"
        e["event_id"] = f"{tag}{e['event_id']}"
        out.append(e)
    return out


def spaced(events: list[dict[str, Any]], gap: int) -> list[dict[str, Any]]:
    """``events`` (in time order) reordered so that a lead's consecutive events are at
    least ``gap`` places apart, each lead's own order kept.

    A replay sends weeks of events in seconds, and the worker reads the three input topics
    side by side, each at its own pace: a lead's ``lead_created`` (leads.crm) and its first
    page view (leads.web), a second apart in event time, were read in either order, so about
    one vector in ten lacked the profile that the offline replay (which applies events in
    time order) had. Produced at a steady rate with the lead's events spaced apart, each
    arrives after the one before it, as it does live."""
    last: dict[str, int] = {}
    slots = []
    for i, e in enumerate(events):
        slot = max(i, last.get(e["lead_id"], -gap) + gap)
        last[e["lead_id"]] = slot
        slots.append(slot)
    order = sorted(range(len(events)), key=lambda i: (slots[i], i))
    return [events[i] for i in order]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - local
        text = r.read().decode()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of ``name`` over the series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


@dataclass
class MonitorProcess:
    settings: Settings
    proc: Any
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.monitor_port}/metrics"

    def metrics(self) -> Samples:
        return scrape(self.url)

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait(self, done: Callable[[Samples], bool], what: str, timeout: float = 90.0) -> Samples:
        """Poll /metrics until ``done``; then until an evaluation newer than that moment has
        run, and return the metrics it set."""
        deadline = time.monotonic() + timeout
        seen_at: float | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"monitor exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                m = self.metrics()
            except (OSError, urllib.error.URLError):
                time.sleep(0.3)
                continue
            if seen_at is None and done(m):
                seen_at = time.time()
            updated = value(m, "leadscore_monitor_last_update_timestamp_seconds")
            if seen_at is not None and updated is not None and updated > seen_at:
                return m
            time.sleep(0.3)
        pytest.fail(f"monitor: {what} not reached in {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except Exception:  # noqa: BLE001
                self.proc.kill()


def start_monitor(settings: Settings, log_path: Path, timeout: float = 30.0) -> MonitorProcess:
    mon = MonitorProcess(settings, spawn_command(settings, log_path, "monitor"), log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mon.proc.poll() is not None:
            pytest.fail(f"monitor exited with {mon.proc.returncode}:\n{mon.log_tail()}")
        try:
            mon.metrics()
            return mon
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"monitor's /metrics did not answer in {timeout} s:\n{mon.log_tail()}")
