"""Waiting out a Redis that is away: the one backoff both store connections use.

A Redis that is down or paused makes the worker wait, not fail: calls are retried with an
exponential backoff (50 ms, doubling, up to ``max_s``), and given up only after
``retry_for_s`` (None: never).
"""

from __future__ import annotations

import asyncio
import logging

from leadscore.features.exceptions import FeatureStoreUnavailableError

log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.05


class RetryStats:
    """Process-wide counts for the worker's metrics (plain integers: no lock, and only the
    event loop's thread adds to them)."""

    errors = 0
    """Redis calls that failed with the service unavailable."""
    retries = 0
    """Of those, the ones tried again after a wait."""


STATS = RetryStats()


class Backoff:
    def __init__(self, max_s: float, retry_for_s: float | None) -> None:
        self._max_s = max_s
        self._retry_for_s = retry_for_s
        self.reset()

    def reset(self) -> None:
        """A call went through: the next failure starts from the first delay again."""
        self._delay = FIRST_DELAY_S
        self._waited = 0.0

    def exhausted(self) -> bool:
        return self._retry_for_s is not None and self._waited >= self._retry_for_s

    def unavailable(self, exc: BaseException) -> FeatureStoreUnavailableError:
        return FeatureStoreUnavailableError(f"Redis is unavailable: {exc}")

    async def wait(self, exc: BaseException) -> None:
        """Sleep before the next try; raise :class:`FeatureStoreUnavailableError` once the
        retry time is used up."""
        STATS.errors += 1
        if self.exhausted():
            raise self.unavailable(exc) from exc
        STATS.retries += 1
        log.warning("Redis unavailable (%s); retrying in %.2fs", exc, self._delay)
        await asyncio.sleep(self._delay)
        self._waited += self._delay
        self._delay = min(self._delay * 2, self._max_s)
