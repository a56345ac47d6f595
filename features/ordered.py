"""Script calls on one dedicated Redis connection, applied in the order they are made.

Redis runs the commands of one connection in the order it reads them. Calls written to one
connection as they are made, without waiting for the previous reply, are therefore applied
in call order: the worker sends each chunk of a batch as soon as it is validated, and Redis
works through them while the worker scores the chunks already answered. With a connection
pool the same calls could go out on different connections and be applied in any order,
which would break per-lead event order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from leadscore.features.exceptions import FeatureStoreUnavailableError
from leadscore.features.retry import Backoff

log = logging.getLogger(__name__)

CONNECTION_NAME = "leadscore-updates"
_FAILURES = (RedisConnectionError, RedisTimeoutError, NoScriptError, OSError)


class OrderedScriptCalls:
    """``EVALSHA`` calls of one script, in call order, on a connection of their own.

    When the connection fails (or the script is missing from Redis's cache, after a
    restart), every call not yet answered is written again, in order, on a new connection
    after a backoff. The store's script is idempotent per event, so a call that had run
    before the failure gives the same results again (applied events come back as
    redeliveries, with the features they had). Reads have no timeout: a Redis that pauses
    makes the calls wait, as the connection pool's do.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        script: str,
        sha: str,
        *,
        max_backoff_s: float = 5.0,
        retry_for_s: float | None = None,
    ) -> None:
        self._pool = client.connection_pool
        self._script = script
        self._sha = sha
        self._max_backoff_s = max_backoff_s
        self._retry_for_s = retry_for_s
        self._conn: Any = None
        self._open = False
        """The connection is up and every queued call has been written to it."""
        self._queue: deque[tuple[list[bytes], asyncio.Future[Any]]] = deque()
        """Calls not yet answered, in call order."""
        self._reader: asyncio.Task[None] | None = None

    async def call(self, keys: list[str], args: list[Any]) -> Any:
        if self._conn is None:
            self._conn = self._pool.make_connection()
        packed = self._conn.pack_command("EVALSHA", self._sha, len(keys), *keys, *args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # Queued and (on an open connection) written before the first await: call order is
        # write order.
        self._queue.append((packed, future))
        if self._open:
            try:
                await self._conn.send_packed_command(packed, check_health=False)
            except _FAILURES:
                pass  # the reader sees the connection fail and writes the queue again
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read())
        return await future

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._conn is not None:
            await self._conn.disconnect()
        self._open = False

    async def _read(self) -> None:
        backoff = Backoff(self._max_backoff_s, self._retry_for_s)
        try:
            while self._queue:
                try:
                    if not self._open:
                        await self._reopen()
                    reply = await self._conn.read_response(disconnect_on_error=True)
                except _FAILURES as exc:
                    self._open = False
                    await self._conn.disconnect(nowait=True)
                    if backoff.exhausted():
                        self._fail(backoff.unavailable(exc))
                        return
                    await backoff.wait(exc)
                    continue
                except ResponseError as exc:  # an error reply: this call's error
                    reply = exc
                backoff.reset()
                _, future = self._queue.popleft()
                if future.done():  # its caller was cancelled
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except asyncio.CancelledError:
            self._fail(FeatureStoreUnavailableError("the feature store was closed"))
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
            # Nothing awaits this task: its callers must hear of any other failure.
            self._open = False
            self._fail(exc)

    async def _reopen(self) -> None:
        conn = self._conn
        await conn.connect()
        # Named, so that it can be told apart in CLIENT LIST.
        await conn.send_packed_command(
            conn.pack_command("CLIENT", "SETNAME", CONNECTION_NAME), check_health=False
        )
        await conn.read_response(disconnect_on_error=True)
        await conn.send_packed_command(
            conn.pack_command("SCRIPT", "LOAD", self._script), check_health=False
        )
        sha = await conn.read_response(disconnect_on_error=True)
        if (sha.decode() if isinstance(sha, bytes) else str(sha)) != self._sha:
            raise FeatureStoreUnavailableError(
                "Redis gave the feature store script another SHA1 than redis-py"
            )
        # Calls queued while this runs are written here too: the loop ends on the last one
        # and the connection is marked open with nothing in between.
        i = 0
        while i < len(self._queue):
            await conn.send_packed_command(self._queue[i][0], check_health=False)
            i += 1
        self._open = True

    def _fail(self, exc: Exception) -> None:
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(exc)
