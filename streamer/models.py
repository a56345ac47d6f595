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
from dataclasses import dataclass
from pathlib import Path

from leadscore.features.definitions import SPECS, Profile
from leadscore.model.artifact import LightGBMScorer
from leadscore.model.exceptions import ModelError, ModelIntegrityError
from leadscore.model.experiment import Experiment
from leadscore.model.explain import ExplainMethod
from leadscore.model.registry import Registry
from leadscore.model.rules import RuleScorer
from leadscore.model.scoring import Scorer
from leadscore.streamer.metrics import Metrics

log = logging.getLogger(__name__)

_Signature = tuple[tuple[int, int], ...] | None


@dataclass(frozen=True, slots=True)
class ActiveExperiment:
    """A running A/B experiment and its challenger's scorer."""

    experiment: Experiment
    scorer: Scorer


class ModelHolder:
    def __init__(
        self,
        model_dir: str | Path,
        *,
        rules_file: Path | None = None,
        explain: ExplainMethod = "path",
        max_reasons: int = 5,
        metrics: Metrics | None = None,
        check_in_child: bool = True,
        count_drift: bool = True,
    ) -> None:
        self.registry = Registry(model_dir)
        self._explain: ExplainMethod = explain
        self._max_reasons = max_reasons
        self._metrics = metrics
        self._check_in_child = check_in_child
        self._count_drift = count_drift
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
        self.shadow: Scorer | None = None
        """Scored beside the champion; its records go to ``leads.scores.shadow`` only."""
        self.experiment: ActiveExperiment | None = None
        self.side_problem: str | None = None
        """Why the shadow or the experiment's challenger is not in use, or None."""

    def start(self) -> None:
        """The first load: the champion; if it fails, the newest version that passes its
        checks; else the rules. Then the shadow and the experiment, if any."""
        self._start_champion()
        self._refresh_side()

    def _start_champion(self) -> None:
        self._refresh_champion()
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
        """Load the champion, the shadow and the experiment if they changed; True when the
        champion was swapped. Never raises."""
        swapped = self._refresh_champion()
        self._refresh_side()
        return swapped

    def _refresh_side(self) -> None:
        """The shadow and the A/B challenger: hot-swapped like the champion; one that fails
        to load is left out (and said so), never the champion."""
        problems = []
        try:
            shadow = self.registry.shadow()
        except ModelError as exc:
            shadow, problems = None, [f"shadow pointer: {exc}"]
        if shadow is None:
            self.shadow = None
        elif self.shadow is None or self.shadow.version != shadow:
            self.shadow, problem = self._side_scorer(shadow)
            problems += [problem] if problem else []
        try:
            exp = self.registry.experiment()
        except ModelError as exc:
            exp, problems = None, [*problems, f"experiment pointer: {exc}"]
        if exp is None:
            self.experiment = None
        elif self.experiment is None or self.experiment.experiment != exp:
            scorer, problem = self._side_scorer(exp.version)
            self.experiment = None if scorer is None else ActiveExperiment(exp, scorer)
            problems += [problem] if problem else []
        self.side_problem = "; ".join(problems) or None

    def _side_scorer(self, version: str) -> tuple[Scorer | None, str | None]:
        if version == self._loaded:
            return self.current, None
        if version in self._failed and self._failed[version] == self._signature(version):
            return None, f"model {version} failed its checks"
        try:
            scorer = self._load(version)
        except ModelError as exc:
            self._failed[version] = self._signature(version)
            log.error("model %s (shadow or A/B challenger) failed its checks: %s", version, exc)
            return None, f"model {version} failed its checks: {exc}"
        log.info("model %s loaded beside the champion", version)
        return scorer, None

    def _refresh_champion(self) -> bool:
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
            scorer = LightGBMScorer.load(
                self.registry.path(version), explain=self._explain, max_reasons=self._max_reasons
            )
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a model does, the worker goes on
            raise ModelIntegrityError(f"model {version} failed to load: {exc}") from exc
        _check_features(scorer)
        if self._count_drift:
            live = scorer.count_drift()
            if live is not None and self._metrics is not None:
                self._metrics.live.track(version, live)
        return scorer

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


def _check_features(scorer: LightGBMScorer) -> None:
    """Refuse a model whose inputs the worker does not compute (a model trained on a CRM
    table's columns, or on another feature set): it would score every lead from missing
    values."""
    computed = {s.name: isinstance(s, Profile) for s in SPECS}
    wrong = [
        f.name
        for f in scorer.meta.features
        if f.name not in computed or computed[f.name] != (f.kind == "categorical")
    ]
    if wrong:
        raise ModelIntegrityError(
            f"model {scorer.version} needs features the worker does not compute "
            f"({len(wrong)}, e.g. {', '.join(wrong[:5])}): it was trained on another feature set"
        )
