"""redis-py asyncio connections that pack commands with hiredis (C) instead of Python.

redis-py's synchronous client packs with hiredis when it is installed; its asyncio client
always packs argument by argument in Python. The worker's feature-store call carries ~900
arguments per chunk of 128 events. (cProfile put packing at ~15 % of the hot path, but it
inflates small calls: timed in-process, this and per-batch histogram observes together saved
0-5 % of the CPU per event.) The bytes sent are the same (``tests/unit/test_redisconn.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

if TYPE_CHECKING:
    from leadscore.settings import Settings


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


def connection_kwargs(settings: Settings) -> dict[str, Any]:
    """redis-py keyword arguments for the settings' credentials and TLS (the URL gives the
    rest, and may carry them instead: ``Settings`` refuses a credential given twice). The
    caller makes the connections TLS ones when :attr:`Settings.redis_uses_tls`."""
    kwargs: dict[str, Any] = {}
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_uses_tls:
        if settings.redis_tls_cafile:
            kwargs["ssl_ca_certs"] = str(settings.redis_tls_cafile)
        if settings.redis_tls_certfile:
            kwargs["ssl_certfile"] = str(settings.redis_tls_certfile)
            kwargs["ssl_keyfile"] = str(settings.redis_tls_keyfile)
    return kwargs


def redis_client(settings: Settings) -> Any:
    """A Redis (or, with ``LEADSCORE_REDIS_CLUSTER``, a Redis Cluster) asyncio client."""
    # No read timeout: a Redis that pauses must make the worker wait for the reply. A timeout
    # followed by a retry could run a batch twice, and the second run would see every event
    # as a duplicate and score none of them. Connection failures are retried with backoff.
    kwargs: dict[str, Any] = {
        "socket_timeout": None,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
        **connection_kwargs(settings),
    }
    if settings.redis_cluster:
        from redis.asyncio.cluster import RedisCluster

        kwargs.pop("health_check_interval", None)
        if settings.redis_uses_tls:
            kwargs["ssl"] = True
        return RedisCluster.from_url(settings.require_redis(), **kwargs)
    pool = aioredis.ConnectionPool.from_url(settings.require_redis(), **kwargs)
    # The URL picks TCP, TLS (rediss://) or a unix socket; LEADSCORE_REDIS_TLS turns a
    # redis:// URL into TLS. TCP, TLS and unix-socket connections pack commands with hiredis.
    if settings.redis_tls or issubclass(pool.connection_class, SSLConnection):
        pool.connection_class = HiredisPackSSLConnection
    elif pool.connection_class is Connection:
        pool.connection_class = HiredisPackConnection
    elif pool.connection_class is UnixDomainSocketConnection:
        pool.connection_class = HiredisPackUnixConnection
    return aioredis.Redis(connection_pool=pool)
