"""An in-memory feature store: the same rules as the Redis store, for unit tests and replay."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from leadscore.features.alerting import AlertPolicy, Announced, decide
from leadscore.features.offline import LeadState
from leadscore.features.store import Confirmation, Update
from leadscore.schemas import FeatureValue
from leadscore.schemas.validation import Event


class MemoryFeatureStore:
    """In-memory store built on :class:`LeadState`; the same rules, for unit tests and replay."""

    def __init__(self, *, ordered: bool = False) -> None:
        self.leads: dict[str, LeadState] = {}
        self.scores: dict[str, dict[str, Any]] = {}
        self.pending: dict[tuple[str, str], dict[str, FeatureValue]] = {}
        self.announced: dict[str, Announced] = {}
        self.erased: set[str] = set()
        self._ordered = ordered

    @property
    def ordered(self) -> bool:
        # Its calls apply in call order either way (none yields before it ends): ``ordered``
        # picks which path of the pipeline a test takes (all chunks' calls sent during
        # validation, as on Redis, or each after the previous reply).
        return self._ordered

    async def apply_batch(
        self, events: Sequence[Event], confirm: Sequence[Confirmation] = ()
    ) -> list[Update]:
        for key in confirm:
            self.pending.pop(key, None)
        out: list[Update] = []
        applied_now: set[tuple[str, str]] = set()
        for ev in events:
            if ev.lead_id in self.erased:
                out.append(Update("erased"))
                continue
            key = (ev.lead_id, ev.event_id)
            state = self.leads.setdefault(ev.lead_id, LeadState())
            outcome = state.apply(ev)
            if outcome == "ok":
                feats = state.features()
                assert feats is not None  # noqa: S101 - an applied event always has features
                self.pending[key] = feats
                applied_now.add(key)
                out.append(Update("ok", feats))
            elif outcome == "dup" and key in self.pending and key not in applied_now:
                out.append(Update("redelivered", self.pending[key]))
            else:
                out.append(Update(outcome, None))
        return out

    async def read(self, lead_id: str, at_ms: int | None = None) -> dict[str, FeatureValue] | None:
        state = self.leads.get(lead_id)
        return None if state is None else state.features(at_ms)

    async def save_scores(
        self, records: Sequence[dict[str, Any]], encoded: Sequence[bytes] | None = None
    ) -> dict[str, str | None]:
        previous: dict[str, str | None] = {}
        for r in records:
            if r["lead_id"] not in previous:
                old = self.scores.get(r["lead_id"])
                previous[r["lead_id"]] = old["tier"] if old else None
            self.scores[r["lead_id"]] = r
        return previous

    async def save_and_decide(
        self,
        records: Sequence[dict[str, Any]],
        encoded: Sequence[bytes],
        policy: AlertPolicy,
        thresholds: Callable[[str], tuple[float, float]],
    ) -> dict[str, str]:
        last = {r["lead_id"]: r for r in records}
        out: dict[str, str] = {}
        for lead, rec in last.items():
            self.scores[lead] = rec
            hot, warm = thresholds(rec["model_version"])
            out[lead], self.announced[lead] = decide(
                self.announced.get(lead),
                score=float(rec["score"]),
                tier=rec["tier"],
                version=rec["model_version"],
                hot=hot,
                warm=warm,
                policy=policy,
            )
        return out

    async def latest_score(self, lead_id: str) -> dict[str, Any] | None:
        return self.scores.get(lead_id)

    async def durable(self) -> None:
        """Nothing to wait for: there are no replicas."""

    async def erase(self, lead_ids: Sequence[str], suppress_s: int, now_ms: int) -> dict[str, int]:
        out = await self.sweep(lead_ids)
        for lead in lead_ids:
            out[lead] += int(self.leads.pop(lead, None) is not None)
            self.erased.add(lead)
        return out

    async def sweep(self, lead_ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for lead in lead_ids:
            n = int(self.announced.pop(lead, None) is not None)
            n += int(self.scores.pop(lead, None) is not None)
            pending = [key for key in self.pending if key[0] == lead]
            for key in pending:
                del self.pending[key]
            out[lead] = n + int(bool(pending))
        return out
