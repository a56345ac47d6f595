"""`leadscore retrain --every`: runs now and on schedule; a failed round doesn't end it."""

from __future__ import annotations

import time

from leadscore.errors import LeadscoreError
from leadscore.jobs.retrain import retrain_every


def test_the_loop_runs_on_schedule_and_survives_a_failed_round() -> None:
    calls: list[float] = []
    emitted: list[dict] = []
    said: list[str] = []

    def run() -> dict:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise LeadscoreError("the archive is unreachable")
        return {"round": len(calls)}

    done = retrain_every(0.2, run, emit=emitted.append, say=said.append, rounds=3)
    assert done == 3
    assert emitted == [{"round": 1}, {"round": 3}]
    assert said and "the archive is unreachable" in said[0]
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert all(g >= 0.19 for g in gaps), gaps
