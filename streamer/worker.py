"""The worker process: Faust's worker with a bounded shutdown."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import faust

from leadscore.settings import Settings

log = logging.getLogger(__name__)


class BoundedWorker(faust.Worker):
    """``faust.Worker`` whose shutdown can't hang.

    A graceful stop waits for every consumed event to be acknowledged; after a failure (an
    agent that died mid-batch, a broker that refuses records) that can take forever (Faust
    logs "wait_empty: Waiting for tasks"). A watchdog armed at SIGTERM/SIGINT, and when the
    worker shuts down for any other reason, ends the process after ``shutdown_timeout_s``.
    Nothing is lost: offsets are committed only for batches whose records were delivered.
    A second signal exits at once.
    """

    def __init__(self, app: faust.App, *args: Any, shutdown_timeout_s: float, **kw: Any) -> None:
        super().__init__(app, *args, **kw)
        self.shutdown_timeout_s = shutdown_timeout_s
        self._watchdog: threading.Timer | None = None

    def _arm_watchdog(self, reason: str) -> None:
        if self._watchdog is not None:
            return
        timeout = self.shutdown_timeout_s

        def expire() -> None:
            sys.stderr.write(f"leadscore worker: shutdown ({reason}) took over {timeout} s\n")
            sys.stderr.flush()
            os._exit(1)

        self._watchdog = threading.Timer(timeout, expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _on_signal(self, sig: signal.Signals, parent: Callable[[], None]) -> None:
        if self._watchdog is not None:
            os._exit(128 + sig)
        log.info("%s: stopping (at most %.0f s)", sig.name, self.shutdown_timeout_s)
        self._arm_watchdog(sig.name)
        parent()

    def _on_sigterm(self) -> None:
        self._on_signal(signal.SIGTERM, super()._on_sigterm)

    def _on_sigint(self) -> None:
        self._on_signal(signal.SIGINT, super()._on_sigint)

    def on_worker_shutdown(self) -> None:
        self._arm_watchdog("crash" if self.crash_reason else "exit")
        super().on_worker_shutdown()


def run_worker(settings: Settings) -> int:
    """``leadscore worker``: create the topics if missing, build the app, run until stopped."""
    from leadscore.infra.topics import ensure_topics
    from leadscore.streamer import gc_tuning
    from leadscore.streamer.app import create_app

    # Both services named before any is contacted: a missing setting is one clear line.
    settings.require_kafka()
    settings.require_redis()
    ensure_topics(settings)
    app, _rt = create_app(settings)
    # Everything the worker keeps for its lifetime (modules, the model) exists by now.
    gc_tuning.tune(settings.gc_gen0_threshold)
    worker = BoundedWorker(
        app,
        loglevel=settings.log_level.lower(),
        quiet=True,
        shutdown_timeout_s=settings.shutdown_timeout_s,
    )
    worker.execute_from_commandline()
    return 0
