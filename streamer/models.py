"""The worker's current scorer: the registry champion, hot-swapped when a new one is promoted.

A batch takes ``holder.current`` once and scores with it, so in-flight events finish on the
model they started with while the next batch picks up the new champion.

Nothing in the registry can stop the worker: a champion that fails its checks (checksums,
metadata, LightGBM loading it in a child process: :mod:`leadscore.model.integrity`) or an unreadable
pointer leaves the last good model scoring, and ``problem`` says why (``/ready`` reports it,
``leadscore_model_degraded`` is 1). At start-up a broken champion gives way to the newest
version that passes, else to the rules.
"""

from __future__ import annotations

import logging
from pathlib import Path

from leadscore.model.artifact import LightGBMScorer
from leadscore.model.exceptions import ModelError, ModelIntegrityError
from leadscore.model.explain import ExplainMethod
from leadscore.model.registry import Registry
from leadscore.model.rules import RuleScorer
from leadscore.model.scoring import Scorer
from leadscore.streamer.metrics import Metrics

log = logging.getLogger(__name__)

_Signature = tuple[tuple[int, int], ...] | None


class ModelHolder:
    def __init__(
        self,
        model_dir: Path,
        *,
        rules_file: Path | None = None,
        explain: ExplainMethod = "path",
        max_reasons: int = 5,
        metrics: Metrics | None = None,
        check_in_child: bool = True,
    ) -> None:
        self.registry = Registry(model_dir)
        self._explain: ExplainMethod = explain
        self._max_reasons = max_reasons
        self._metrics = metrics
        self._check_in_child = check_in_child
        self.rules: Scorer = (
            RuleScorer.from_file(rules_file) if rules_file else RuleScorer.default()
        )
        self.current: Scorer = self.rules
        self.problem: str | None = None
        """Why the worker is not scoring with the registry's champion, or None."""
        self._loaded: str | None = None
        self._failed: dict[str, _Signature] = {}
        """Versions that failed to load, with their files' state then: tried again only if
        their files change."""

    def start(self) -> None:
        """The first load: the champion; if it fails, the newest version that passes its
        checks; else the rules."""
        self.refresh()
        if self.problem is None or self._loaded is not None:
            return
        broken = self.problem
        for info in reversed(self.registry.list()):
            if info.problem or info.version in self._failed:
                continue
            try:
                scorer = self._load(info.version)
            except ModelError as exc:
                log.warning("model %s is not usable either: %s", info.version, exc)
                self._failed[info.version] = self._signature(info.version)
                continue
            self.current, self._loaded = scorer, info.version
            self._set_problem(f"{broken}; scoring with {info.version}, the newest valid version")
            return
        self._set_problem(f"{broken}; scoring with the rules ({self.rules.version})")

    def refresh(self) -> bool:
        """Load the champion if it changed; True when the scorer was swapped. Never raises."""
        try:
            champ = self.registry.champion()
        except ModelError as exc:
            self._set_problem(f"the champion pointer is unreadable: {exc}")
            return False
        if champ is None:
            return False
        if champ == self._loaded:
            self._set_problem(None)
            return False
        signature = self._signature(champ)
        if champ in self._failed and self._failed[champ] == signature:
            return False
        try:
            scorer = self._load(champ)
        except ModelError as exc:
            self._failed[champ] = signature
            if self._metrics is not None:
                self._metrics.model_load_failures.inc()
            log.error(
                "champion %s failed its checks, keeping %s: %s", champ, self.current.version, exc
            )
            self._set_problem(f"champion {champ} failed its checks: {exc}")
            return False
        self._failed.pop(champ, None)
        self.current, self._loaded = scorer, champ
        self._set_problem(None)
        log.info("now scoring with model %s", champ)
        return True

    def _load(self, version: str) -> LightGBMScorer:
        self.registry.verify(version, in_child=self._check_in_child)
        try:
            return LightGBMScorer.load(
                self.registry.path(version), explain=self._explain, max_reasons=self._max_reasons
            )
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a model does, the worker goes on
            raise ModelIntegrityError(f"model {version} failed to load: {exc}") from exc

    def _signature(self, version: str) -> _Signature:
        try:
            d = self.registry.path(version)
            stats = [p.stat() for p in sorted(d.iterdir()) if p.is_file()]
        except (OSError, ModelError):
            return None
        return tuple((s.st_mtime_ns, s.st_size) for s in stats)

    def _set_problem(self, problem: str | None) -> None:
        self.problem = problem
        if self._metrics is not None:
            self._metrics.model_degraded.set(0 if problem is None else 1)
