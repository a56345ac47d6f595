"""The worker's current scorer: the registry champion, hot-swapped when a new one is promoted.

A batch takes ``holder.current`` once and scores with it, so in-flight events finish on the
model they started with while the next batch picks up the new champion.
"""

from __future__ import annotations

import logging
from pathlib import Path

from model.artifact import LightGBMScorer
from model.exceptions import ModelError
from model.explain import ExplainMethod
from model.registry import Registry
from model.rules import RuleScorer
from model.scoring import Scorer

log = logging.getLogger(__name__)


class ModelHolder:
    def __init__(
        self,
        model_dir: Path,
        *,
        rules_file: Path | None = None,
        explain: ExplainMethod = "path",
        max_reasons: int = 5,
    ) -> None:
        self.registry = Registry(model_dir)
        self._explain: ExplainMethod = explain
        self._max_reasons = max_reasons
        self.rules: Scorer = (
            RuleScorer.from_file(rules_file) if rules_file else RuleScorer.default()
        )
        self.current: Scorer = self.rules
        self._loaded: str | None = None

    def refresh(self) -> bool:
        """Load the champion if it changed; True when the scorer was swapped."""
        try:
            champ = self.registry.champion()
        except ModelError as exc:
            log.warning("model registry unreadable, keeping %s: %s", self.current.version, exc)
            return False
        if champ is None or champ == self._loaded:
            return False
        try:
            scorer = LightGBMScorer.load(
                self.registry.path(champ), explain=self._explain, max_reasons=self._max_reasons
            )
        except ModelError as exc:
            log.error("can't load champion %s, keeping %s: %s", champ, self.current.version, exc)
            self._loaded = champ
            return False
        self.current = scorer
        self._loaded = champ
        log.info("now scoring with model %s", champ)
        return True
