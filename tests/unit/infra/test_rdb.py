"""A Redis snapshot fetched over the network is the server's data: fetched from a real
redis-server both ways a master sends it (diskless, ended by a mark; from disk, with a
length), then loaded by another redis-server. A server that refuses SYNC is a clear error."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import pytest
import redis

from leadscore.infra.rdb import (
    EOF_MARK_LEN,
    SnapshotError,
    _copy_to_mark,
    fetch_snapshot,
    redis_nodes,
)
from leadscore.settings import Settings
from leadscore.tooling.embedded import Service, ServiceStartError, start_redis


def _redis(d: Path, *args: str) -> Service:
    d.mkdir(exist_ok=True)
    try:
        return start_redis(d, extra_args=list(args))
    except ServiceStartError as exc:
        pytest.fail(f"no redis-server to start: {exc}")


def _content(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key's serialised value (DUMP), read in one pipeline."""
    keys = sorted(client.scan_iter(count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
    return dict(zip(keys, pipe.execute(), strict=True))


@pytest.mark.parametrize("diskless", ["yes", "no"])
def test_a_fetched_snapshot_loads_as_the_same_data(tmp_path: Path, diskless: str) -> None:
    src = _redis(
        tmp_path / "src", "--repl-diskless-sync", diskless, "--repl-diskless-sync-delay", "0"
    )
    try:
        c = redis.Redis.from_url(src.url)
        pipe = c.pipeline(transaction=False)
        for i in range(3_000):
            pipe.set(f"k{i}", hashlib.sha256(str(i).encode()).hexdigest() * 3, ex=86_400)
            pipe.zadd(f"z{i % 50}", {f"e{i}": i})
        pipe.execute()
        want = _content(c)
        node = redis_nodes(Settings(redis_url=src.url))[0]
        snap = fetch_snapshot(node, tmp_path / "dump.rdb")
        assert snap.diskless is (diskless == "yes")
        data = (tmp_path / "dump.rdb").read_bytes()
        assert data.startswith(b"REDIS") and len(data) == snap.size
        assert hashlib.sha256(data).hexdigest() == snap.sha256
        assert not (tmp_path / "dump.rdb.part").exists()
        c.close()
    finally:
        src.stop()

    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    shutil.copyfile(tmp_path / "dump.rdb", restored_dir / "dump.rdb")
    # start_redis turns saving off, not loading: the server loads dump.rdb from its dir.
    dst = _redis(restored_dir)
    try:
        c = redis.Redis.from_url(dst.url)
        assert _content(c) == want
        assert 0 < c.ttl("k1") <= 86_400
        c.close()
    finally:
        dst.stop()


def test_a_user_without_the_sync_permission_is_a_clear_error(tmp_path: Path) -> None:
    src = _redis(tmp_path / "src", "--user", "app", "on", ">pw", "~*", "+@all", "-sync", "-psync")
    try:
        port = src.url.rsplit(":", 1)[1].split("/")[0]
        s = Settings(redis_url=f"redis://app:pw@127.0.0.1:{port}/0")
        with pytest.raises(SnapshotError, match="refused SYNC: NOPERM"):
            fetch_snapshot(redis_nodes(s)[0], tmp_path / "dump.rdb")
        assert not (tmp_path / "dump.rdb").exists()
        assert not (tmp_path / "dump.rdb.part").exists()
    finally:
        src.stop()


class _Drip:
    """A socket that hands out its bytes a few at a time."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step = data, step

    def recv(self, n: int) -> bytes:
        out, self.data = self.data[: min(n, self.step)], self.data[min(n, self.step) :]
        return out


@pytest.mark.parametrize("step", [1, 7, 39, 40, 41, 4096])
def test_a_diskless_payload_ends_at_its_mark_wherever_the_reads_cut_it(step: int) -> None:
    mark = hashlib.sha256(b"mark").hexdigest()[:EOF_MARK_LEN].encode()
    assert len(mark) == EOF_MARK_LEN
    # The payload ends with most of the mark (bytes held back, then written after all), and
    # what a master before Redis 7 sends after it (the replication stream) is not kept.
    payload = b"REDIS0010" + bytes(range(256)) * 3 + mark[:-1]
    out = io.BytesIO()
    sock = _Drip(payload + mark + b"*1\r\n$4\r\nPING\r\n", step)
    size, digest = _copy_to_mark(sock, out, mark, "n", lambda _m: None)
    assert out.getvalue() == payload and size == len(payload)
    assert digest == hashlib.sha256(payload).hexdigest()
    with pytest.raises(SnapshotError, match="without its end mark"):
        _copy_to_mark(_Drip(payload, step), io.BytesIO(), mark, "n", lambda _m: None)
