"""What every scorer returns, and the shared pieces: tiers, score records, the Scorer protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Tier = Literal["hot", "warm", "cold"]
Value = int | float | str | None
Row = Mapping[str, Value]


@dataclass(frozen=True, slots=True)
class Reason:
    """One feature's contribution to a score (log-odds for models, points for rules)."""

    feature: str
    value: Value
    contribution: float

    def as_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "contribution": self.contribution}


@dataclass(frozen=True, slots=True)
class Scored:
    score: float
    tier: Tier
    reasons: tuple[Reason, ...]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Lower score bounds of the hot and warm tiers (stored with the model)."""

    hot: float
    warm: float

    def tier(self, score: float) -> Tier:
        if score >= self.hot:
            return "hot"
        if score >= self.warm:
            return "warm"
        return "cold"


class Scorer(Protocol):
    """Scores a batch of feature rows; one call per batch keeps the model's per-call cost low."""

    @property
    def version(self) -> str: ...

    def score_batch(self, rows: Sequence[Row], *, explain: bool = True) -> list[Scored]: ...


def top_reasons(items: Sequence[Reason], k: int) -> tuple[Reason, ...]:
    """The ``k`` reasons with the largest absolute contribution (ties by feature name)."""
    ranked = sorted(items, key=lambda r: (-abs(r.contribution), r.feature))
    return tuple(r for r in ranked[:k] if r.contribution != 0.0)
