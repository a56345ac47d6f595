"""redis-py asyncio connections that pack commands with hiredis (C) instead of Python.

redis-py's synchronous client packs with hiredis when it is installed; its asyncio client
always packs argument by argument in Python. The worker's feature-store call carries ~900
arguments per chunk of 128 events. (cProfile put packing at ~15 % of the hot path, but it
inflates small calls: timed in-process, this and per-batch histogram observes together saved
0-5 % of the CPU per event.) The bytes sent are the same (``tests/unit/test_redisconn.py``).
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection


def _pack(encoder: Any, args: tuple[Any, ...]) -> list[bytes] | None:
    """The command as redis-py would send it, or None to let redis-py pack it itself: for
    another encoding than strict UTF-8 (hiredis's), and for argument types hiredis refuses
    (so that redis-py raises its usual error)."""
    if encoder.encoding.lower().replace("-", "") != "utf8" or encoder.encoding_errors != "strict":
        return None
    if isinstance(args[0], str) and " " in args[0]:
        # A command name with literal arguments ("CONFIG GET") goes out as separate words.
        args = (*args[0].split(), *args[1:])
    try:
        return [hiredis.pack_command(args)]
    except TypeError:
        return None


class _HiredisPack:
    """Mixed into a redis-py connection class ahead of it: packs with hiredis, else as it does."""

    encoder: Any

    def pack_command(self, *args: Any) -> list[bytes]:
        return _pack(self.encoder, args) or super().pack_command(*args)  # type: ignore[misc]


class HiredisPackConnection(_HiredisPack, Connection):
    pass


class HiredisPackSSLConnection(_HiredisPack, SSLConnection):
    pass


class HiredisPackUnixConnection(_HiredisPack, UnixDomainSocketConnection):
    pass
