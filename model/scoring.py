"""What every scorer returns, and the shared pieces: tiers, score records, the Scorer protocol."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from leadscore.schemas import FeatureValue

Tier = Literal["hot", "warm", "cold"]
Row = Mapping[str, FeatureValue]


class Reason(NamedTuple):
    """One feature's contribution to a score (log-odds for models, points for rules).

    A named tuple, not a dataclass: the worker builds several per event, and a frozen
    dataclass costs several times more to construct.
    """

    feature: str
    value: FeatureValue
    contribution: float

    def as_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "contribution": self.contribution}


@dataclass(frozen=True, slots=True)
class FeatureBatch:
    """Feature rows in the text form an online store returns them in, read column-wise.

    Each of ``texts`` holds one row's fields in ``names`` order, joined by ``sep``, with ``""``
    for a missing value; ``parse(j, field)`` gives column ``j``'s typed value. A model encodes
    a whole batch from this without building a dict per row.
    """

    names: tuple[str, ...]
    texts: Sequence[str]
    sep: str
    parse: Callable[[int, str], FeatureValue]
    shared: dict[object, Any] = field(default_factory=dict, compare=False, repr=False)
    """Work the models scoring this batch share: its fields split once (``"flat"``), and
    each column encoded once per set of category levels (``(column, levels)``), so that a
    shadow model's pass reuses the champion's encoding instead of doing it again."""

    def __len__(self) -> int:
        return len(self.texts)

    def flat(self) -> list[str]:
        """Every row's fields in one row-major list (row ``i``, column ``j`` at
        ``i * len(names) + j``).

        Raises
        ------
        ValueError
            When a row doesn't have one field per name.
        """
        done = self.shared.get("flat")
        if done is not None:
            return done
        flat = self.sep.join(self.texts).split(self.sep) if self.texts else []
        if len(flat) != len(self.texts) * len(self.names):
            raise ValueError(
                f"feature vectors don't have {len(self.names)} fields each "
                f"({len(flat)} fields in {len(self.texts)} rows)"
            )
        self.shared["flat"] = flat
        return flat

    def rows(self) -> list[dict[str, FeatureValue]]:
        parse = self.parse
        names = self.names
        return [
            {n: parse(j, f) for j, (n, f) in enumerate(zip(names, t.split(self.sep), strict=True))}
            for t in self.texts
        ]


Rows = Sequence[Row] | FeatureBatch


class Scored(NamedTuple):
    score: float
    tier: Tier
    reasons: tuple[Reason, ...]


class ScoredRecord(NamedTuple):
    """A score with its reasons already as the score record's JSON objects (the worker's
    form: it serialises them straight away, so no ``Reason`` is built only to be converted)."""

    score: float
    tier: Tier
    reasons: list[dict[str, Any]]


def as_records(scored: Sequence[Scored]) -> list[ScoredRecord]:
    return [ScoredRecord(s.score, s.tier, [r.as_dict() for r in s.reasons]) for s in scored]


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

    def score_batch(self, rows: Rows, *, explain: bool = True) -> list[Scored]: ...

    def score_records(self, rows: Rows) -> list[ScoredRecord]:
        """``score_batch`` with reasons, each as ``{"feature", "value", "contribution"}``."""
        ...


def top_reasons(items: Sequence[Reason], k: int) -> tuple[Reason, ...]:
    """The ``k`` reasons with the largest absolute contribution (ties by feature name)."""
    ranked = sorted(items, key=lambda r: (-abs(r.contribution), r.feature))
    return tuple(r for r in ranked[:k] if r.contribution != 0.0)
