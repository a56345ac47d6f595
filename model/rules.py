"""The rule-based baseline: points per behaviour and profile, read from a JSON file.

It scores leads before any model is trained (cold start) and is the comparison line in every
evaluation report. Its ``version`` always starts with ``rules`` so consumers can tell.

Examples
--------
>>> rs = RuleScorer.default()
>>> s = rs.score_batch([{"web_demo_requests_30d": 1, "web_pricing_views_7d": 2}])[0]
>>> s.tier, round(s.score, 3)
('warm', 0.321)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from leadscore.model.exceptions import RulesConfigError
from leadscore.model.scoring import (
    FeatureBatch,
    Reason,
    Row,
    Rows,
    Scored,
    ScoredRecord,
    Thresholds,
    as_records,
    top_reasons,
)
from leadscore.schemas import FeatureValue

_OPS = (">=", ">", "<=", "<", "==", "in")


@dataclass(frozen=True, slots=True)
class Rule:
    feature: str
    op: str
    value: Any
    points: float

    def fires(self, v: FeatureValue) -> bool:
        if v is None:
            return False
        if self.op == "in":
            return v in self.value
        if self.op == "==":
            return bool(v == self.value)
        if isinstance(v, str):
            return False
        if self.op == ">=":
            return v >= self.value
        if self.op == ">":
            return v > self.value
        if self.op == "<=":
            return v <= self.value
        return v < self.value


class RuleScorer:
    """Sums the points of the rules that fire and maps them to (0, 1) with a logistic curve."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        version: str,
        intercept: float,
        points_per_logit: float,
        thresholds: Thresholds,
        max_reasons: int = 5,
    ) -> None:
        if not version.startswith("rules"):
            raise RulesConfigError(f"a rule set's version must start with 'rules', got {version!r}")
        self._rules = tuple(rules)
        self._version = version
        self._intercept = intercept
        self._ppl = points_per_logit
        self.thresholds = thresholds
        self._max_reasons = max_reasons

    @property
    def version(self) -> str:
        return self._version

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.feature for r in self._rules))

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> RuleScorer:
        try:
            rules = [
                Rule(r["feature"], r["op"], r["value"], float(r["points"])) for r in cfg["rules"]
            ]
            th = Thresholds(float(cfg["thresholds"]["hot"]), float(cfg["thresholds"]["warm"]))
            version = str(cfg["version"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RulesConfigError(f"rule file is missing or has a bad field: {exc}") from exc
        for r in rules:
            if r.op not in _OPS:
                raise RulesConfigError(
                    f"rule on {r.feature}: unknown op {r.op!r}; use one of {_OPS}"
                )
        return cls(
            rules,
            version=version,
            intercept=float(cfg.get("intercept", 0.0)),
            points_per_logit=float(cfg.get("points_per_logit", 20.0)),
            thresholds=th,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> RuleScorer:
        try:
            cfg = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RulesConfigError(f"can't read rule file {path}: {exc}") from exc
        return cls.from_dict(cfg)

    @classmethod
    def default(cls) -> RuleScorer:
        text = (
            resources.files(__package__ or "leadscore.model")
            .joinpath("rules_default.json")
            .read_text(encoding="utf-8")
        )
        return cls.from_dict(json.loads(text))

    def points(self, row: Row) -> tuple[float, list[Reason]]:
        total = 0.0
        by_feature: dict[str, float] = {}
        for rule in self._rules:
            if rule.fires(row.get(rule.feature)):
                total += rule.points
                by_feature[rule.feature] = by_feature.get(rule.feature, 0.0) + rule.points
        reasons = [Reason(f, row.get(f), p) for f, p in by_feature.items()]
        return total, reasons

    def score_records(self, rows: Rows) -> list[ScoredRecord]:
        return as_records(self.score_batch(rows))

    def score_batch(self, rows: Rows, *, explain: bool = True) -> list[Scored]:
        if isinstance(rows, FeatureBatch):
            rows = rows.rows()
        out = []
        for row in rows:
            pts, reasons = self.points(row)
            score = 1.0 / (1.0 + math.exp(-(self._intercept + pts / self._ppl)))
            chosen = top_reasons(reasons, self._max_reasons) if explain else ()
            out.append(Scored(score, self.thresholds.tier(score), chosen))
        return out
