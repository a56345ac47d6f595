"""Commands packed by hiredis are byte for byte what redis-py's own packing sends."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError

from streamer.app import redis_client
from streamer.redisconn import HiredisPackConnection, HiredisPackSSLConnection
from streamer.settings import Settings

CASES: list[tuple[Any, ...]] = [
    ("EVALSHA", "0123abcd", 3, "ls:{a}:b", "ls:{a}:i", "ls:{a}:p", "u", 1, 0),
    ("SET", "k", "ünïcødé ✓", "EX", 86_400),
    ("SET", b"\x00\xffbinary", 1.5),
    ("ZADD", "z", -2, 0.1, 1e20, 12345678901234567890, ""),
    ("CONFIG GET", "maxmemory"),
]


@pytest.mark.parametrize("args", CASES)
def test_same_bytes_as_redis_py(args: tuple[Any, ...]) -> None:
    ours = b"".join(HiredisPackConnection().pack_command(*args))
    theirs = b"".join(Connection().pack_command(*args))
    assert ours == theirs


def test_an_argument_redis_py_refuses_is_still_refused() -> None:
    with pytest.raises(DataError):
        HiredisPackConnection().pack_command("SET", "k", True)


def test_another_encoding_is_packed_by_redis_py() -> None:
    conn = HiredisPackConnection(encoding="latin-1")
    assert (
        b"".join(conn.pack_command("SET", "k", "é"))
        == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n\xe9\r\n"
    )


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, HiredisPackConnection),
        ({"redis_url": "rediss://cache.example:6380/0"}, HiredisPackSSLConnection),
        ({"redis_tls": True, "redis_tls_cafile": "/etc/ca.pem"}, HiredisPackSSLConnection),
        ({"redis_url": "unix:///run/redis.sock"}, UnixDomainSocketConnection),
    ],
)
def test_the_worker_client_uses_them_for_tcp_and_tls(
    settings: dict[str, Any], expected: type
) -> None:
    client = redis_client(Settings(**settings))
    assert client.connection_pool.connection_class is expected
    if settings.get("redis_tls_cafile"):
        assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    # The connection can be made (REDIS_TLS once passed an argument connections refuse).
    assert isinstance(client.connection_pool.make_connection(), expected)
