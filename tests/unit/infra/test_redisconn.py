"""Commands packed by hiredis are byte for byte what redis-py's own packing sends."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from leadscore.infra.redis import (
    HiredisPackConnection,
    HiredisPackSSLConnection,
    HiredisPackUnixConnection,
    redis_client,
)
from leadscore.settings import Settings
from leadscore.tooling.embedded import ServiceStartError, redis_binary

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
        ({"redis_url": "redis://127.0.0.1:6379/0"}, HiredisPackConnection),
        ({"redis_url": "rediss://cache.example:6380/0"}, HiredisPackSSLConnection),
        (
            {
                "redis_url": "redis://cache:6379/0",
                "redis_tls": True,
                "redis_tls_cafile": "/etc/ca.pem",
            },
            HiredisPackSSLConnection,
        ),
        ({"redis_url": "unix:///run/redis.sock"}, HiredisPackUnixConnection),
    ],
)
def test_the_worker_client_uses_them_for_tcp_tls_and_unix_sockets(
    settings: dict[str, Any], expected: type
) -> None:
    client = redis_client(Settings(**settings))
    assert client.connection_pool.connection_class is expected
    if settings.get("redis_tls_cafile"):
        assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    # The connection can be made (REDIS_TLS once passed an argument connections refuse).
    assert isinstance(client.connection_pool.make_connection(), expected)


async def test_a_unix_socket_round_trip(tmp_path: Path) -> None:
    """A Redis on the same host is often reached through its unix socket: the worker's client
    sends hiredis-packed commands over it and reads the replies."""
    try:
        binary = redis_binary()
    except ServiceStartError as exc:
        pytest.fail(f"no Redis binary to start: {exc}")
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(  # noqa: S603 - the Redis binary the project starts elsewhere
        [binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        for _ in range(100):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        client = redis_client(Settings(redis_url=f"unix://{sock}"))
        try:
            await client.set("k", "ünïcødé ✓", ex=60)
            assert (await client.get("k")).decode() == "ünïcødé ✓"
            assert await client.eval("return ARGV[1] .. KEYS[1]", 1, "b", "a") == b"ab"
        finally:
            await client.aclose()
    finally:
        proc.terminate()
        proc.wait(10)


def test_no_redis_url_is_a_clear_error_not_a_guess() -> None:
    from leadscore.errors import ConfigError

    with pytest.raises(ConfigError, match="LEADSCORE_REDIS_URL is not set"):
        redis_client(Settings())
