"""``leadscore retrain``: train a challenger on the archive's recent window and let the
promotion gate decide; once (for cron or a Kubernetes CronJob) or every ``--every``."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from leadscore.errors import LeadscoreError
from leadscore.features.definitions import DAY_MS
from leadscore.jobs.history import load_events
from leadscore.jobs.train_events import Window, train_from_event_list
from leadscore.model.gate import GatePolicy
from leadscore.schemas.privacy import Redactor

log = logging.getLogger(__name__)

#: The longest feature window (30 days): events this far before the training window count
#: towards the features of its first moments.
WARMUP_DAYS = 30
Say = Callable[[str], None]


def retrain_once(
    source: str,
    *,
    out_dir: str | Path,
    days: float,
    horizon_ms: int,
    until_ms: int | None = None,
    train_until_ms: int | None = None,
    seed: int | None = None,
    policy: GatePolicy | None = None,
    progress: Say | None = None,
    sensitive: Sequence[str] = (),
    redactor: Redactor | None = None,
) -> dict[str, Any]:
    """Train on the moments of ``[until - days, until)`` (until: now) and run the gate.

    The latest moments of that window are held out for the challenger, the champion and
    the rules alike; ``train_until_ms`` trains on earlier moments only (to test, say, a
    model of an older period against today's champion on today's data). Events from
    ``WARMUP_DAYS`` before the window feed the rolling features of its first moments.
    """
    say = progress or (lambda _m: None)
    until = until_ms if until_ms is not None else int(time.time() * 1000)
    since = until - int(days * DAY_MS)
    events = load_events(
        source,
        since_ms=since - WARMUP_DAYS * DAY_MS,
        until_ms=until,
        progress=say,
        redactor=redactor,
    )
    report = train_from_event_list(
        events,
        horizon_ms=horizon_ms,
        out_dir=out_dir,
        promote=True,
        policy=policy,
        window=Window(moments_from_ms=since, train_until_ms=train_until_ms),
        seed=seed,
        progress=say,
        sensitive=sensitive,
    )
    report["window_days"] = days
    return report


def retrain_every(
    every_s: float,
    run: Callable[[], dict[str, Any]],
    *,
    emit: Callable[[dict[str, Any]], None],
    say: Say,
    rounds: int | None = None,
) -> int:
    """Call ``run`` now and then every ``every_s`` seconds until SIGTERM/SIGINT (or
    ``rounds`` runs). A failed round is reported and the loop goes on; returns the rounds."""
    stop = threading.Event()
    previous = {
        s: signal.signal(s, lambda *_a: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)
    }
    done = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                emit(run())
            except LeadscoreError as exc:
                say(f"retrain failed: {exc}; next try in {every_s:.0f} s")
            done += 1
            if rounds is not None and done >= rounds:
                break
            stop.wait(max(0.0, every_s - (time.monotonic() - started)))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return done
