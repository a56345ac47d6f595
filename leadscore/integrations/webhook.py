"""The webhook sink of ``leadscore sync``: one POST per batch, retried until it is taken or
dead-lettered, so that the sync never loses a batch and never stops on one.

Each batch carries an ``Idempotency-Key`` header: a hash of its body, so a batch sent again
(a retry, or a redelivery after the sync restarted) has the same key and the receiver can
acknowledge it once. Timeouts, connection errors, 408, 429 and 5xx answers are retried with
exponential backoff (``Retry-After`` honoured up to the backoff's cap); after ``tries``
attempts, or at once on another 4xx (a request the endpoint refuses won't improve), the batch
goes to the dead-letter file with the last error, and the sync goes on.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from leadscore.errors import ConfigError

log = logging.getLogger(__name__)

Update = tuple[str, dict[str, Any] | None]
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class WebhookSink:
    def __init__(
        self,
        url: str,
        *,
        authorization: str | None = None,
        tries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        timeout_s: float = 10.0,
        dead_letter: Path = Path("sync-dead-letter.jsonl"),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise ConfigError(
                "the webhook sink needs the webhook extra: pip install 'leadscore[webhook]'"
            ) from exc
        self._httpx = httpx
        self._url = url
        headers = {"Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        self._client = httpx.Client(headers=headers, timeout=timeout_s)
        self._tries = max(1, tries)
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._dead_letter = dead_letter
        self._sleep = sleep
        self.sent = 0
        self.dead_lettered = 0

    def write(self, updates: Sequence[Update]) -> None:
        body = orjson.dumps(
            [
                rec if rec is not None else {"lead_id": lead, "deleted": True}
                for lead, rec in updates
            ]
        )
        key = hashlib.sha256(body).hexdigest()[:32]
        error = self._post(body, key)
        if error is None:
            self.sent += 1
            return
        self._to_dead_letter(body, key, error)

    def _post(self, body: bytes, key: str) -> str | None:
        """None once the endpoint took the batch; else the last error."""
        delay = self._backoff_s
        error = ""
        for attempt in range(1, self._tries + 1):
            wait = delay
            try:
                resp = self._client.post(self._url, content=body, headers={"Idempotency-Key": key})
            except self._httpx.TransportError as exc:  # timeouts and connection errors
                error = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 300:
                    return None
                error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code not in RETRY_STATUS:
                    return error  # refused: retrying the same request won't help
                wait = max(delay, _retry_after(resp.headers.get("Retry-After")))
            if attempt < self._tries:
                log.warning(
                    "webhook batch %s: %s; try %d of %d in %.2f s",
                    key, error, attempt + 1, self._tries, min(wait, self._max_backoff_s),
                )  # fmt: skip
                self._sleep(min(wait, self._max_backoff_s))
                delay = min(delay * 2, self._max_backoff_s)
        return error

    def _to_dead_letter(self, body: bytes, key: str, error: str) -> None:
        line = {
            "batch": key,
            "url": self._url,
            "error": error,
            "failed_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "records": orjson.loads(body),
        }
        self._dead_letter.parent.mkdir(parents=True, exist_ok=True)
        with self._dead_letter.open("ab") as fh:
            fh.write(orjson.dumps(line) + b"\n")
        self.dead_lettered += 1
        log.error("webhook batch %s dead-lettered to %s after %s", key, self._dead_letter, error)

    def close(self) -> None:
        self._client.close()


def _retry_after(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0
