"""Redis snapshots fetched over the network: the RDB file a new replica would receive.

``redis-cli --rdb FILE`` does the same; doing it here needs no Redis tools on the machine
that takes the backup, and reuses the settings' URL, password and TLS. The client says what
it can read (``REPLCONF capa eof``: a stream ended by a random mark, which lets a master
configured for diskless replication send without writing to its disk) and that it wants the
snapshot only (``REPLCONF rdb-only 1``, Redis 7+: no replication stream after it), then
``SYNC``. The master forks and streams a point-in-time snapshot; serving clients goes on.

Where it can't work: services that don't offer ``SYNC`` to clients (managed ones such as
ElastiCache or MemoryDB), and ACL users without the ``sync`` permission. Use the provider's
own snapshots there (``leadscore backup --no-redis`` takes the rest of the backup).

A master with ``repl-diskless-sync yes`` (the default since Redis 7) waits
``repl-diskless-sync-delay`` seconds (default 5) for other replicas before it starts.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import RedisError, ResponseError

from leadscore.errors import LeadscoreError
from leadscore.infra.redis import connection_kwargs
from leadscore.settings import Settings

#: Bytes of the mark that ends a diskless transfer (``$EOF:<mark>`` announces it).
EOF_MARK_LEN = 40
CHUNK = 1 << 20
#: Seconds without a byte before giving up. While it prepares the snapshot the master
#: sends a newline every second, so a silence this long means a dead link.
IDLE_TIMEOUT_S = 60.0

Progress = Callable[[str], None]


class SnapshotError(LeadscoreError):
    """Raised when a Redis snapshot can't be fetched (refused, cut short, not an RDB)."""


@dataclass(frozen=True, slots=True)
class RedisNode:
    """A Redis server to snapshot: the single Redis, or one master of a cluster."""

    name: str
    """``host:port`` (or the unix socket's path)."""
    connection: Any
    """An unconnected redis-py connection with the settings' credentials and TLS."""
    node_id: str = ""
    slots: tuple[tuple[int, int], ...] = ()
    """A cluster master's slot ranges (first, last), inclusive."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    node: str
    path: Path
    size: int
    sha256: str
    seconds: float
    diskless: bool


def _client_kwargs(settings: Settings) -> dict[str, Any]:
    return {
        "socket_connect_timeout": 10.0,
        "socket_timeout": IDLE_TIMEOUT_S,
        **connection_kwargs(settings),
    }


def redis_nodes(settings: Settings) -> list[RedisNode]:
    """The servers whose snapshots make up the feature store: the Redis of the settings, or
    every master of the Redis Cluster (each holds the state of its slots)."""
    url = settings.require_redis()
    kwargs = _client_kwargs(settings)
    if not settings.redis_cluster:
        pool = redis.ConnectionPool.from_url(url, **kwargs)
        if settings.redis_tls and pool.connection_class is redis.Connection:
            pool.connection_class = redis.SSLConnection
        conn = pool.make_connection()
        host = pool.connection_kwargs.get("host")
        name = f"{host}:{pool.connection_kwargs.get('port', 6379)}" if host else url
        return [RedisNode(name, conn)]
    if settings.redis_tls:
        kwargs["ssl"] = True
    cluster = redis.RedisCluster.from_url(url, **kwargs)
    try:
        ranges: dict[str, list[tuple[int, int]]] = {}
        # redis-py parses the reply into {(first, last): {"primary": (host, port), ...}}.
        slots: Any = cluster.cluster_slots()
        for (first, last), info in slots.items():
            primary = info["primary"]
            ranges.setdefault(f"{primary[0]}:{primary[1]}", []).append((int(first), int(last)))
        nodes = []
        for node in sorted(cluster.get_primaries(), key=lambda n: n.name):
            client = node.redis_connection
            node_id = client.execute_command("CLUSTER", "MYID")
            nodes.append(
                RedisNode(
                    node.name,
                    client.connection_pool.make_connection(),
                    node_id.decode() if isinstance(node_id, bytes) else str(node_id),
                    tuple(sorted(ranges.get(node.name, []))),
                )
            )
        return nodes
    except RedisError as exc:
        raise SnapshotError(f"can't list the Redis Cluster's masters at {url}: {exc}") from exc
    finally:
        cluster.close()


def fetch_snapshot(node: RedisNode, dest: Path, progress: Progress | None = None) -> Snapshot:
    """Stream ``node``'s snapshot into ``dest`` (written as ``dest.part``, then renamed)."""
    say = progress or (lambda _msg: None)
    conn = node.connection
    t0 = time.monotonic()
    part = dest.with_name(dest.name + ".part")
    try:
        conn.connect()
        conn.send_command("REPLCONF", "capa", "eof")
        conn.read_response()
        try:
            conn.send_command("REPLCONF", "rdb-only", "1")
            conn.read_response()
        except ResponseError:
            pass  # before Redis 7: the replication stream follows the snapshot; we hang up
        conn.send_command("SYNC")
        # From here the reply is no RESP value but a raw payload: read the socket itself
        # (the parser holds nothing: nothing came after the last reply it read).
        sock = conn._sock
        sock.settimeout(IDLE_TIMEOUT_S)
        header = _read_header(sock, node.name)
        with part.open("wb") as fh:
            if header.startswith(b"EOF:"):
                size, digest = _copy_to_mark(sock, fh, header[4:], node.name, say)
            else:
                size, digest = _copy_counted(sock, fh, _length(header, node.name), node.name, say)
            fh.flush()
        _check_rdb(part, node.name)
        part.replace(dest)
    except (OSError, RedisError) as exc:
        part.unlink(missing_ok=True)
        raise SnapshotError(f"Redis {node.name}: the snapshot failed: {exc}") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        conn.disconnect()
    return Snapshot(
        node.name, dest, size, digest, time.monotonic() - t0, header.startswith(b"EOF:")
    )


def _read_header(sock: Any, name: str) -> bytes:
    """The ``$<length>`` or ``$EOF:<mark>`` line, after the newlines the master sends while it
    prepares the snapshot."""
    line = bytearray()
    while True:
        b = sock.recv(1)
        if not b:
            raise SnapshotError(f"Redis {name} closed the connection before the snapshot")
        if b == b"\n":
            if line:
                break
            continue
        line += b
    text = bytes(line).rstrip(b"\r")
    if text.startswith(b"-"):
        raise SnapshotError(
            f"Redis {name} refused SYNC: {text[1:].decode(errors='replace')} (a managed Redis "
            "without SYNC: use its own snapshots and `leadscore backup --no-redis`; an ACL "
            "user needs the sync permission)"
        )
    if not text.startswith(b"$"):
        raise SnapshotError(f"Redis {name} answered SYNC with {text[:80]!r}")
    return text[1:]


def _length(header: bytes, name: str) -> int:
    try:
        return int(header)
    except ValueError:
        raise SnapshotError(f"Redis {name}: unexpected snapshot header {header[:80]!r}") from None


class _Meter:
    """Progress lines every few seconds while bytes arrive."""

    def __init__(self, name: str, say: Progress) -> None:
        self.name, self.say = name, say
        self.next = time.monotonic() + 5.0

    def __call__(self, size: int) -> None:
        if time.monotonic() >= self.next:
            self.say(f"  {self.name}: {size / 2**20:,.1f} MiB received")
            self.next = time.monotonic() + 5.0


def _copy_counted(sock: Any, fh: Any, length: int, name: str, say: Progress) -> tuple[int, str]:
    h = hashlib.sha256()
    left = length
    meter = _Meter(name, say)
    while left:
        chunk = sock.recv(min(CHUNK, left))
        if not chunk:
            raise SnapshotError(f"Redis {name}: the snapshot was cut short ({left} bytes missing)")
        fh.write(chunk)
        h.update(chunk)
        left -= len(chunk)
        meter(length - left)
    return length, h.hexdigest()


def _copy_to_mark(sock: Any, fh: Any, mark: bytes, name: str, say: Progress) -> tuple[int, str]:
    """A diskless transfer: the payload ends with ``mark``; the last bytes read are held back
    until it is clear they are not the mark."""
    if len(mark) != EOF_MARK_LEN:
        raise SnapshotError(f"Redis {name}: unexpected end mark {mark!r}")
    h = hashlib.sha256()
    held = b""
    size = 0
    meter = _Meter(name, say)
    while True:
        chunk = sock.recv(CHUNK)
        if not chunk:
            raise SnapshotError(f"Redis {name}: the snapshot ended without its end mark")
        data = held + chunk
        end = data.find(mark)
        if end >= 0:
            fh.write(data[:end])
            h.update(data[:end])
            return size + end, h.hexdigest()
        keep = len(data) - (EOF_MARK_LEN - 1)
        if keep > 0:
            fh.write(data[:keep])
            h.update(data[:keep])
            size += keep
            held = data[keep:]
        else:
            held = data
        meter(size)


def _check_rdb(path: Path, name: str) -> None:
    with path.open("rb") as fh:
        magic = fh.read(9)
    if not magic.startswith(b"REDIS"):
        raise SnapshotError(f"Redis {name}: what it sent is not an RDB file ({magic!r})")
