"""The workers' live bin counts, scraped and summed, and the sliding window the drift tests use.

Each worker exports ``leadscore_feature_bin_total`` and ``leadscore_score_bin_total``
(counters: they sum across workers). The monitor scrapes every worker (a URL whose host
name resolves to several addresses, as a scaled compose service's does, is scraped at each),
adds up the increases since its last scrape per target (a restarted worker's counters start
again from zero: a drop is read as a reset), and keeps a cumulative total per model version.
A snapshot of the totals after every scrape lets the window be "the last N vectors".
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from leadscore.model.drift import Reference

log = logging.getLogger(__name__)

Series = tuple[str, str, str]
"""(model version, feature or "score", bin label)."""


def expand(urls: Iterable[str]) -> list[str]:
    """Each URL, once per IPv4 address its host resolves to (every replica of a scaled
    service behind one DNS name); a host that does not resolve is kept as it is."""
    out: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
        try:
            found = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
            addrs = sorted({str(a[4][0]) for a in found})
        except OSError:
            addrs = []
        if len(addrs) <= 1:
            out.append(url)
            continue
        for addr in addrs:
            netloc = f"{addr}:{port}" if port else addr
            out.append(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")))
    return out


def parse(text: str) -> dict[Series, float]:
    """The bin counters in a scrape."""
    out: dict[Series, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name not in ("leadscore_feature_bin", "leadscore_score_bin"):
            continue
        for s in fam.samples:
            if not s.name.endswith("_total"):
                continue
            lab = s.labels
            is_feature = fam.name == "leadscore_feature_bin"
            feature = lab.get("feature", "score") if is_feature else "score"
            out[(lab.get("model_version", ""), feature, lab.get("bin", ""))] = float(s.value)
    return out


@dataclass
class Scraper:
    urls: list[str]
    timeout_s: float = 5.0
    totals: dict[Series, float] = field(default_factory=lambda: defaultdict(float))
    _last: dict[str, dict[Series, float]] = field(default_factory=dict)
    errors: int = 0

    def scrape(self) -> int:
        """Scrape every target once and add the increases; returns the targets reached."""
        reached = 0
        for url in expand(self.urls):
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:  # noqa: S310 - configured URLs
                    text = resp.read().decode("utf-8", "replace")
            except OSError as exc:
                self.errors += 1
                log.warning("could not scrape %s: %s", url, exc)
                continue
            reached += 1
            now = parse(text)
            before = self._last.get(url, {})
            for key, value in now.items():
                prev = before.get(key, 0.0)
                self.totals[key] += value - prev if value >= prev else value
            self._last[url] = now
        return reached

    def counts(self, version: str, reference: Reference) -> np.ndarray:
        """The cumulative live counts of ``version`` laid out as ``LiveBins.counts``."""
        width = max(b.size for b in reference.all)
        out = np.zeros((len(reference.all), width), dtype=np.float64)
        for j, b in enumerate(reference.all):
            name = "score" if b is reference.score else b.name
            for k, label in enumerate(b.bin_names):
                out[j, k] = self.totals.get((version, name, label), 0.0)
        return out


@dataclass
class Window:
    """Snapshots of one version's cumulative counts; the window is the difference between
    now and the newest snapshot at least ``size`` vectors back (or the oldest one)."""

    size: int
    snapshots: list[np.ndarray] = field(default_factory=list)

    def push(self, counts: np.ndarray) -> None:
        if self.snapshots and np.array_equal(self.snapshots[-1], counts):
            return
        self.snapshots.append(counts.copy())
        # Keep only what a window can still start from: the newest snapshot at least
        # `size` vectors back and everything after it.
        total = _vectors(counts)
        start = 0
        for i, snap in enumerate(self.snapshots):
            if total - _vectors(snap) >= self.size:
                start = i
        del self.snapshots[:start]

    def current(self) -> np.ndarray | None:
        if not self.snapshots:
            return None
        now = self.snapshots[-1]
        total = _vectors(now)
        base: np.ndarray | None = None
        for snap in self.snapshots:
            if total - _vectors(snap) >= self.size:
                base = snap
        if base is None:
            base = np.zeros_like(now) if len(self.snapshots) == 1 else self.snapshots[0]
        return now - base


def _vectors(counts: np.ndarray) -> float:
    """Vectors counted: the score row's total."""
    return float(counts[-1].sum())
