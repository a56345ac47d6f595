"""The offline feature computation: replays an event history with the same rules as the Lua
script, so training sets see exactly the features the live worker computes.

:class:`LeadState` is the reference implementation of the per-lead state machine; it also
serves as the in-memory feature store for unit tests and for point-in-time training sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from leadscore.features.definitions import (
    BUCKET_MS,
    DAY_MS,
    OPT_OUT_FIELD,
    RECENCY_FIELD,
    RETENTION_MS,
    SPECS,
    Count,
    Decayed,
    Flag,
    Number,
    Profile,
    Rate,
    Recency,
    Resolution,
    Spec,
    decay_factors,
    event_kind,
    kept_buckets,
    kind_groups,
)
from leadscore.features.exceptions import EventFileError
from leadscore.features.wire import profile_updates
from leadscore.schemas import FeatureValue
from leadscore.schemas.privacy import Redactor
from leadscore.schemas.validation import Event, Invalid, validate_event

Outcome = Literal["ok", "dup", "late", "opted_out"]

_RES: tuple[Resolution, ...] = ("m", "h", "d")


@dataclass(slots=True)
class _Compiled:
    specs: tuple[Spec, ...]
    keep: dict[Resolution, int]
    res_by_kind: dict[str, tuple[Resolution, ...]]
    decay: list[float]
    points: dict[str, tuple[tuple[str, int], ...]]


def _compile(specs: tuple[Spec, ...]) -> _Compiled:
    from leadscore.features.definitions import DECAY_POOLS, counted_kinds

    keep = kept_buckets(specs)
    half_life = next((s.half_life_days for s in specs if isinstance(s, Decayed)), 1.0)
    # Per kind, the (pool, points) it adds to: in DECAY_POOLS order, as the script has them.
    points: dict[str, list[tuple[str, int]]] = {}
    for pool, table in DECAY_POOLS.items():
        for kind, pts in table.items():
            if pts > 0:
                points.setdefault(kind, []).append((pool, pts))
    return _Compiled(
        specs,
        keep,
        counted_kinds(specs),
        decay_factors(half_life, keep["d"]),
        {k: tuple(v) for k, v in points.items()},
    )


_DEFAULT = _compile(SPECS)


@dataclass(slots=True)
class LeadState:
    """The state of one lead, updated event by event exactly as the Lua script does."""

    compiled: _Compiled = field(default_factory=lambda: _DEFAULT)
    max_ts: int | None = None
    recency: dict[str, int] = field(default_factory=dict)
    counters: dict[tuple[str, Resolution, int], int] = field(default_factory=dict)
    engagement: dict[int, int] = field(default_factory=dict)
    #: The decay pools other than ``e`` (:data:`DECAY_POOLS`): pool -> {day: points}.
    pools: dict[str, dict[int, int]] = field(default_factory=dict)
    profile: dict[str, str] = field(default_factory=dict)
    stamps: dict[str, tuple[int, str]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    opted_out: bool = False

    def apply(self, ev: Event) -> Outcome:
        """Apply one event. ``dup`` changes nothing; ``late`` (older than the retention before
        the lead's latest event) updates only recency and profile, whose buckets no window
        could read anyway."""
        ts = ev.ts_ms
        seen_ts = self.seen.get(ev.event_id)
        # An id older than the retention is forgotten (as Redis drops it from the id set).
        if seen_ts is not None and (self.max_ts is None or seen_ts >= self.max_ts - RETENTION_MS):
            return "dup"
        kind = event_kind(ev.source, ev.type, ev.attributes)
        self._update_stamps(ev, kind)
        if self.max_ts is not None and ts < self.max_ts - RETENTION_MS:
            return "late"
        self.seen[ev.event_id] = ts
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
        for r in self.compiled.res_by_kind.get(kind, ()):
            key = (kind, r, ts // BUCKET_MS[r])
            self.counters[key] = self.counters.get(key, 0) + 1
        for pool, pts in self.compiled.points.get(kind, ()):
            days = self._pool(pool, create=True)
            day = ts // DAY_MS
            days[day] = days.get(day, 0) + pts
        self._prune()
        return "opted_out" if self.opted_out else "ok"

    def _update_stamps(self, ev: Event, kind: str) -> None:
        # Order-independent and idempotent (max/min and newest-stamp-wins), so late events
        # apply them too and the final state doesn't depend on arrival order.
        ts = ev.ts_ms
        for grp in kind_groups(kind):
            cur = self.recency.get(grp)
            if grp == "cr":
                if cur is None or ts < cur:
                    self.recency[grp] = ts
            elif cur is None or ts > cur:
                self.recency[grp] = ts
        for attr, value in profile_updates(ev).items():
            stamp = self.stamps.get(attr)
            if stamp is None or (ts, ev.event_id) > stamp:
                self.stamps[attr] = (ts, ev.event_id)
                if attr == OPT_OUT_FIELD:
                    self.opted_out = value is not None
                elif value is None:
                    self.profile.pop(attr, None)
                else:
                    self.profile[attr] = value

    def _prune(self) -> None:
        # Same retention as the Lua script; it keeps memory bounded on long histories and
        # never touches a bucket that any window can still read.
        assert self.max_ts is not None  # noqa: S101 - apply() sets it first
        cutoff = self.max_ts - RETENTION_MS
        if len(self.seen) > 64:
            self.seen = {k: v for k, v in self.seen.items() if v >= cutoff}
        keep = self.compiled.keep
        limits = {r: self.max_ts // BUCKET_MS[r] - keep[r] for r in _RES}
        stale = [k for k in self.counters if k[2] <= limits[k[1]]]
        for k in stale:
            del self.counters[k]
        for day in [d for d in self.engagement if d <= limits["d"]]:
            del self.engagement[day]
        for pool, days in list(self.pools.items()):
            for day in [d for d in days if d <= limits["d"]]:
                del days[day]
            if not days:  # as the script drops an emptied pool
                del self.pools[pool]

    def _pool(self, pool: str, create: bool = False) -> dict[int, int]:
        """The days of decay pool ``pool`` (``e`` is :attr:`engagement`)."""
        if pool == "e":
            return self.engagement
        if create:
            return self.pools.setdefault(pool, {})
        return self.pools.get(pool, {})

    def features(self, ref_ms: int | None = None) -> dict[str, FeatureValue] | None:
        """Feature values as of ``ref_ms`` (default: the lead's latest event); None for a
        lead with no event, unless ``ref_ms`` is given (a profile alone has features too:
        counts of zero, no recency)."""
        if self.max_ts is None and ref_ms is None:
            return None
        ref = ref_ms if ref_ms is not None else self.max_ts
        assert ref is not None  # noqa: S101 - checked above
        refb = {r: ref // BUCKET_MS[r] for r in _RES}
        counts: dict[str, int] = {}
        out: dict[str, FeatureValue] = {}
        for s in self.compiled.specs:
            if isinstance(s, Count):
                r, n, rb, kinds = s.resolution, s.n_buckets, refb[s.resolution], s.kinds
                counts[s.name] = sum(
                    c
                    for (k, res, b), c in self.counters.items()
                    if k in kinds and res == r and rb - n < b <= rb
                )
                out[s.name] = counts[s.name]
            elif isinstance(s, Rate):
                den = counts[s.denominator]
                out[s.name] = counts[s.numerator] / den if den > 0 else None
            elif isinstance(s, Recency):
                last = self.recency.get(RECENCY_FIELD[s.group])
                out[s.name] = (ref - last) / DAY_MS if last is not None and last <= ref else None
            elif isinstance(s, Decayed):
                total = 0.0
                d_ref, keep_d = refb["d"], self.compiled.keep["d"]
                days = self._pool(s.pool)
                for b in sorted(days):
                    if d_ref - keep_d < b <= d_ref:
                        total = total + days[b] * self.compiled.decay[d_ref - b]
                out[s.name] = total
            elif isinstance(s, Profile):
                out[s.name] = self.profile.get(s.key)
            elif isinstance(s, Number):
                v = self.profile.get(s.attribute)
                out[s.name] = None if v is None else float(v)
            elif isinstance(s, Flag):
                bits = self.profile.get(s.attribute)
                out[s.name] = None if bits is None else int(bits[s.index])
        return out


def history_parser(redactor: Redactor | None = None) -> Callable[[bytes], Event | Invalid]:
    """How a stored history (a JSONL line, an archived value) becomes an event: the worker's
    validation without the key check (files have no keys) and with any timestamp accepted
    (histories may be simulated into the future). With the worker's ``redactor``
    (``Settings.redactor``) the events' attributes are what the worker keeps, so profile
    features computed offline equal the online ones."""
    import time

    now_ms = int(time.time() * 1000)
    far = 1000 * 365 * DAY_MS

    def parse(raw: bytes) -> Event | Invalid:
        return validate_event(
            raw,
            topic_source=None,
            key=None,
            now_ms=now_ms,
            max_future_ms=far,
            check_key=False,
            redactor=redactor,
        )

    return parse


def read_events(
    path: str | Path, redactor: Redactor | None = None
) -> Iterator[tuple[int, Event | Invalid]]:
    """Yield ``(line_number, event or error)`` for each non-blank line of a JSONL history."""
    p = Path(path)
    if not p.exists():
        raise EventFileError(f"event file {p} does not exist")
    parse = history_parser(redactor)
    try:
        with p.open("rb") as fh:
            for n, line in enumerate(fh, start=1):
                line = line.strip()
                if line:
                    yield n, parse(line)
    except OSError as exc:
        raise EventFileError(f"can't read {p}: {exc}") from exc


def replay(events: Iterable[Event], at_ms: int | None = None) -> dict[str, LeadState]:
    """Replay events in arrival order; with ``at_ms``, only events with ``ts <= at_ms`` count."""
    leads: dict[str, LeadState] = {}
    for ev in events:
        if at_ms is not None and ev.ts_ms > at_ms:
            continue
        state = leads.get(ev.lead_id)
        if state is None:
            state = leads[ev.lead_id] = LeadState()
        state.apply(ev)
    return leads


def features_as_of(
    leads: dict[str, LeadState], at_ms: int | None = None
) -> Iterator[tuple[str, dict[str, FeatureValue]]]:
    """``(lead_id, features)`` for each lead, as of ``at_ms`` or of the lead's latest event."""
    for lead_id, state in leads.items():
        feats = state.features(at_ms)
        if feats is not None:
            yield lead_id, feats


@dataclass(frozen=True, slots=True)
class FileFeatures:
    """``features_from_file``'s result: counts, and each lead's features (lazily)."""

    leads: int
    events: int
    invalid: int
    features: Iterator[tuple[str, dict[str, FeatureValue]]]


def features_from_file(
    path: str | Path,
    at_ms: int | None = None,
    on_invalid: Callable[[str], None] | None = None,
    redactor: Redactor | None = None,
) -> FileFeatures:
    """Replay a JSONL history; each lead's features as of ``at_ms`` (or its latest event).
    Invalid lines are skipped and reported to ``on_invalid``."""
    events: list[Event] = []
    invalid = 0
    for n, res in read_events(path, redactor):
        if isinstance(res, Event):
            events.append(res)
        else:
            invalid += 1
            if on_invalid is not None:
                on_invalid(f"  line {n}: skipped ({res.code}: {res.message})")
    leads = replay(events, at_ms)
    return FileFeatures(len(leads), len(events), invalid, features_as_of(leads, at_ms))
