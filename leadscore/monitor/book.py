"""Scoring moments and their delayed outcomes: the monitor's labelled sample.

The unit is a *scoring moment*, as in training from events (:mod:`leadscore.features.training`):
a score a model gave a lead at one of its events, before the lead's first outcome (a CRM
``converted`` or ``disqualified``). Its label is whether the lead converted within the
model's horizon ``h`` after the moment. At the event-time watermark ``W`` (how far the
monitor has read), a moment at ``t`` is

- *matured* when ``t <= W - h``: its label can no longer change, and it is positive when the
  lead converted in ``(t, t + h]``, negative otherwise;
- *pending* when ``t > W - h``: not counted as a negative (nor as a positive if the lead
  already converted: training from a history that ends at ``W`` leaves such moments out too,
  as keeping only the ones that converted would bias the late moments towards positives).

Every event of an active lead is scored, so counting every score record would weigh a busy
lead hundreds of times more than a quiet one. Training samples up to ``k`` (6) moments per
lead uniformly; here a lead's sample, per model version, is the ``k`` matured moments with
the smallest :func:`moment_key` (a hash of lead and event id: a uniform sample without
replacement, the same moments for every version that scored the same events, so a champion
and its shadow are compared on the same moments). Matured moments are always the earliest
of a lead's moments, so a moment can only ever be sampled if fewer than ``k`` earlier moments
have a smaller key; the book keeps only those.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

MOMENTS_PER_LEAD = 6
"""As many as training from events samples per lead."""
OUTCOMES = ("converted", "disqualified")


def moment_key(lead_id: str, event_id: str) -> int:
    """The sampling key of a lead's moment: the first 8 bytes of SHA-256 of
    ``lead_id + "\\x00" + event_id``, big-endian (what a test recomputes to check the sample)."""
    digest = hashlib.sha256(f"{lead_id}\x00{event_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class Moment(NamedTuple):
    t_ms: int
    key: int
    score: float
    tier: str
    event_id: str


class Labelled(NamedTuple):
    """A matured (or, for estimates, pending) moment with what the report needs."""

    lead_id: str
    t_ms: int
    score: float
    tier: str
    label: int


@dataclass(slots=True)
class LeadBook:
    converted_ms: int | None = None
    closed_ms: int | None = None
    """The lead's first outcome (converted or disqualified): no moment at or after it."""
    segments: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Segment attribute -> (event time, value), the newest by event time."""
    moments: dict[str, list[Moment]] = field(default_factory=dict)
    """Per model version, the candidate moments in time order."""
    last_ms: int = 0

    def add(self, version: str, m: Moment, k: int) -> None:
        ms = self.moments.setdefault(version, [])
        if any(x.event_id == m.event_id for x in ms):
            return  # a redelivered record
        i = len(ms)
        while i and ms[i - 1].t_ms > m.t_ms:
            i -= 1
        ms.insert(i, m)
        self.last_ms = max(self.last_ms, m.t_ms)
        if len(ms) > 4 * k:
            self.prune(version, k, None)

    def eligible(self, version: str) -> list[Moment]:
        ms = self.moments.get(version, [])
        if self.closed_ms is None:
            return ms
        return [m for m in ms if m.t_ms < self.closed_ms]

    def prune(self, version: str, k: int, matured_until: int | None) -> None:
        """Drop the moments that can never be in the sample: a pending one with ``k``
        earlier moments of smaller key, a matured one outside the matured bottom-``k``."""
        ms = self.eligible(version)
        keep: list[Moment] = []
        smaller: list[int] = []  # keys of the earlier moments (sorted, at most k kept)
        matured_keys = sorted(
            m.key for m in ms if matured_until is not None and m.t_ms <= matured_until
        )[:k]
        cut = matured_keys[-1] if len(matured_keys) == k else None
        for m in ms:
            is_matured = matured_until is not None and m.t_ms <= matured_until
            below = sum(1 for key in smaller if key < m.key)
            if is_matured:
                if cut is None or m.key <= cut:
                    keep.append(m)
            elif below < k:
                keep.append(m)
            smaller = sorted([*smaller, m.key])[:k]
        self.moments[version] = keep

    def sample(self, version: str, matured_until: int, k: int) -> list[Moment]:
        """The lead's matured moments in the sample (time order)."""
        matured = [m for m in self.eligible(version) if m.t_ms <= matured_until]
        chosen = set(sorted(m.key for m in matured)[:k])
        return [m for m in matured if m.key in chosen]

    def pending_sample(self, version: str, matured_until: int, k: int) -> list[Moment]:
        """The pending moments that are in the lead's sample as it stands (bottom-``k`` of
        all its moments so far): what the performance estimate is computed over."""
        ms = self.eligible(version)
        chosen = set(sorted(m.key for m in ms)[:k])
        return [m for m in ms if m.t_ms > matured_until and m.key in chosen]

    def label(self, t_ms: int, horizon_ms: int) -> int:
        c = self.converted_ms
        return int(c is not None and t_ms < c <= t_ms + horizon_ms)


def _stamp(book: LeadBook, t_ms: int, attributes: dict[str, Any]) -> None:
    for name, value in attributes.items():
        if value in (None, ""):
            continue
        seen = book.segments.get(name)
        if seen is None or seen[0] <= t_ms:
            book.segments[name] = (t_ms, str(value))


class Book:
    """Every lead's moments and outcomes, and the watermark."""

    def __init__(self, k: int = MOMENTS_PER_LEAD) -> None:
        self.k = k
        self.leads: dict[str, LeadBook] = {}
        self.scores_ms = 0
        """The newest event time on the score topics."""
        self.crm_ms = 0
        """The newest event time on the CRM topic."""
        self.crm_caught_up = False
        """Every CRM partition was read to its end at the last poll."""

    @property
    def watermark_ms(self) -> int:
        """How far outcomes are known: the score topics' event time, held back to the CRM
        topic's while that one is still being read (an outcome read late would otherwise
        have let its lead's moments mature as negatives)."""
        if self.crm_caught_up or not self.crm_ms:
            return self.scores_ms
        return min(self.scores_ms, self.crm_ms)

    def lead(self, lead_id: str) -> LeadBook:
        book = self.leads.get(lead_id)
        if book is None:
            book = self.leads[lead_id] = LeadBook()
        return book

    def score(
        self, lead_id: str, version: str, event_id: str, t_ms: int, score: float, tier: str
    ) -> None:
        self.scores_ms = max(self.scores_ms, t_ms)
        book = self.lead(lead_id)
        if book.closed_ms is not None and t_ms >= book.closed_ms:
            return
        moment = Moment(t_ms, moment_key(lead_id, event_id), score, tier, event_id)
        book.add(version, moment, self.k)

    def crm(self, lead_id: str, kind: str, t_ms: int, attributes: dict[str, Any]) -> None:
        self.crm_ms = max(self.crm_ms, t_ms)
        book = self.lead(lead_id)
        if kind in OUTCOMES:
            if book.closed_ms is None or t_ms < book.closed_ms:
                book.closed_ms = t_ms
            if kind == "converted" and (book.converted_ms is None or t_ms < book.converted_ms):
                book.converted_ms = t_ms
        _stamp(book, t_ms, attributes)

    def profile(self, lead_id: str, t_ms: int, attributes: dict[str, Any]) -> None:
        """Segment values from a source other than the CRM (enrichment firmographics): the
        newest by event time wins, as the CRM's do. Not an outcome: the watermark does not
        wait for that source."""
        if attributes:
            _stamp(self.lead(lead_id), t_ms, attributes)

    def versions(self) -> set[str]:
        return {v for b in self.leads.values() for v in b.moments}

    def matured(
        self, version: str, horizon_ms: int, window_ms: int
    ) -> Iterator[tuple[str, LeadBook, Labelled]]:
        """The sample's matured moments of ``version`` scored in the window
        ``(W - h - window, W - h]``, labelled."""
        until = self.watermark_ms - horizon_ms
        since = until - window_ms
        for lead_id, book in self.leads.items():
            if version not in book.moments:
                continue
            for m in book.sample(version, until, self.k):
                if m.t_ms > since:
                    label = book.label(m.t_ms, horizon_ms)
                    yield lead_id, book, Labelled(lead_id, m.t_ms, m.score, m.tier, label)

    def pending(self, version: str, horizon_ms: int) -> list[Labelled]:
        """The sample's pending moments of ``version`` (label -1: unknown)."""
        until = self.watermark_ms - horizon_ms
        out = []
        for lead_id, book in self.leads.items():
            if version in book.moments:
                for m in book.pending_sample(version, until, self.k):
                    out.append(Labelled(lead_id, m.t_ms, m.score, m.tier, -1))
        return out

    def compact(self, horizon_ms: dict[str, int], window_ms: int) -> int:
        """Prune every lead's candidates and forget the leads whose moments all left the
        window; returns how many leads were forgotten."""
        gone = []
        for lead_id, book in self.leads.items():
            for version in list(book.moments):
                until = self.watermark_ms - horizon_ms.get(version, 0)
                book.prune(version, self.k, until)
            horizon = max(horizon_ms.values(), default=0)
            if book.last_ms and book.last_ms < self.watermark_ms - horizon - window_ms:
                gone.append(lead_id)
        for lead_id in gone:
            del self.leads[lead_id]
        return len(gone)

    # ---------------------------------------------------------------------- persistence
    def as_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "scores_ms": self.scores_ms,
            "crm_ms": self.crm_ms,
            "leads": {
                lead_id: {
                    "c": b.converted_ms,
                    "x": b.closed_ms,
                    "s": {k: list(v) for k, v in b.segments.items()},
                    "m": {v: [list(m) for m in ms] for v, ms in b.moments.items()},
                    "l": b.last_ms,
                }
                for lead_id, b in self.leads.items()
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Book:
        book = cls(int(d.get("k", MOMENTS_PER_LEAD)))
        book.scores_ms = int(d.get("scores_ms", 0))
        book.crm_ms = int(d.get("crm_ms", 0))
        for lead_id, b in d.get("leads", {}).items():
            book.leads[lead_id] = LeadBook(
                b.get("c"),
                b.get("x"),
                {k: (int(v[0]), str(v[1])) for k, v in b.get("s", {}).items()},
                {v: [Moment(*m) for m in ms] for v, ms in b.get("m", {}).items()},
                int(b.get("l", 0)),
            )
        return book
