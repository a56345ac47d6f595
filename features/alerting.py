"""Tier-change alerts with hysteresis: which score records announce a change of tier.

A lead's *announced* tier (the last one a ``leads.alerts`` record told, with when and under
which model version) is kept beside its latest score. A record whose tier differs from it is
announced only when

* its score is past the boundary it crossed by ``margin`` (scores that hover around a
  boundary don't flap), and
* the lead's last announcement is at least ``interval_ms`` old;

otherwise the announced tier stays and a later record that still qualifies is announced. A
record scored by another model version than the announced tier's moves the announced tier
silently (``model_swap``): a swap that re-tiers many leads is announced once, by the
worker's summary record, not lead by lead.

The Redis store decides inside the script call that saves the latest scores (mode ``a`` in
``store.lua``), so a lead's decisions are atomic and in batch order; :func:`decide` is the
same rule in Python (the in-memory store uses it; a test holds the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass

RANK = {"cold": 0, "warm": 1, "hot": 2}

#: Decisions: announce (with the tier announced before), or why not.
ANNOUNCE = "A"
SUPPRESSED = {"M": "margin", "I": "interval", "S": "model_swap"}


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """How tier changes are announced; ``now_ms`` is the save's time."""

    now_ms: int
    margin: float = 0.0
    interval_ms: int = 0


@dataclass(frozen=True, slots=True)
class Announced:
    """What the lead's last announcement said (or, before any, its first score's tier)."""

    tier: str
    at_ms: int
    version: str

    def encode(self) -> str:
        return f"{self.tier}|{self.at_ms}|{self.version}"

    @classmethod
    def decode(cls, text: str) -> Announced:
        tier, at, version = text.split("|", 2)
        return cls(tier, int(at), version)


def beyond(score: float, from_tier: str, to_tier: str, hot: float, warm: float, m: float) -> bool:
    """Whether ``score`` is past the boundary between the tiers by ``m``.

    >>> beyond(0.71, "warm", "hot", hot=0.7, warm=0.3, m=0.02)
    False
    >>> beyond(0.72, "warm", "hot", hot=0.7, warm=0.3, m=0.02)
    True
    >>> beyond(0.69, "hot", "warm", hot=0.7, warm=0.3, m=0.02)
    False
    """
    if RANK[to_tier] > RANK[from_tier]:
        return score >= (hot if to_tier == "hot" else warm) + m
    return score < (warm if to_tier == "cold" else hot) - m


def decide(
    announced: Announced | None,
    *,
    score: float,
    tier: str,
    version: str,
    hot: float,
    warm: float,
    policy: AlertPolicy,
) -> tuple[str, Announced]:
    """``(decision, announced after)`` for a lead's latest record of a batch: ``""``
    (nothing to tell), ``"A" + from_tier`` (announce), or a key of :data:`SUPPRESSED`."""
    if announced is None:
        return "", Announced(tier, 0, version)
    if announced.version != version:
        return ("S" if announced.tier != tier else ""), Announced(tier, announced.at_ms, version)
    if announced.tier == tier:
        return "", announced
    if not beyond(score, announced.tier, tier, hot, warm, policy.margin):
        return "M", announced
    if announced.at_ms and policy.now_ms - announced.at_ms < policy.interval_ms:
        return "I", announced
    return ANNOUNCE + announced.tier, Announced(tier, policy.now_ms, version)
