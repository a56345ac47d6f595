"""The worker and the API on a real Redis Cluster: three masters started from redis-server in
cluster mode, slots assigned and the nodes joined (what `redis-cli --cluster create` does)."""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
import redis

from leadscore.features.store import lead_slot
from leadscore.tooling.embedded import Service, start_redis

from .helpers import (
    Feeder,
    assert_features_match_replay,
    consumer_lag,
    metric_total,
    produce,
    read_to_end,
    recent_events,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

SLOTS = 16384


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too; Redis refuses ports above
    55535 in cluster mode (a random free port was one in a few tries)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20_000, 55_000)
        try:
            for p in (port, port + 10_000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _node(tmp: Path, port: int | None = None) -> tuple[Service, int]:
    """A cluster node; with ``port``, the node that ran there before, restarted (its
    nodes.conf tells it the cluster it belongs to)."""
    port = port or cluster_port()
    d = tmp / f"node-{port}"
    d.mkdir(exist_ok=True)
    args = ["--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf")]
    return start_redis(d, port=port, extra_args=[*args, "--cluster-node-timeout", "2000"]), port


def _wait(ok, what: str, deadline: float) -> None:  # type: ignore[no-untyped-def]
    while not ok():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def start_cluster(tmp: Path, masters: int = 3, replicas: int = 0) -> list[Service]:
    """``masters`` masters (slots split evenly), then ``replicas`` replicas of each; the
    masters come first in the list, replica k of master i at ``masters + i * replicas + k``."""
    nodes: list[Service] = []
    try:
        ports = []
        for _ in range(masters * (1 + replicas)):
            svc, port = _node(tmp)
            nodes.append(svc)
            ports.append(port)
        clients = [redis.Redis.from_url(n.url) for n in nodes]
        share = SLOTS // masters
        for i, c in enumerate(clients[:masters]):
            last = SLOTS - 1 if i == masters - 1 else (i + 1) * share - 1
            c.execute_command("CLUSTER ADDSLOTS", *range(i * share, last + 1))
        for port in ports[1:]:
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
        deadline = time.monotonic() + 60
        # Every node knows every other (the gossip has converged) before replicas attach.
        _wait(lambda: all(len(c.cluster("nodes")) == len(nodes) for c in clients), "meet", deadline)
        for i in range(masters):
            master_id = clients[i].execute_command("CLUSTER MYID")
            for k in range(replicas):
                clients[masters + i * replicas + k].execute_command("CLUSTER REPLICATE", master_id)
        _wait(
            lambda: all(c.cluster("info")["cluster_state"] == "ok" for c in clients),
            "cluster_state ok",
            deadline,
        )
        _wait(
            lambda: all(
                c.info("replication")["connected_slaves"] >= replicas for c in clients[:masters]
            ),
            "replicas attached",
            deadline,
        )
        for c in clients:
            c.close()
        return nodes
    except BaseException:
        for n in nodes:
            n.stop()
        raise


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Service]]:
    nodes = start_cluster(tmp_path)
    try:
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def test_worker_and_api_on_a_three_master_cluster(
    cluster, settings_factory, worker_factory, api_factory, tmp_path
):
    s = settings_factory(redis_url=cluster[0].url, redis_cluster=True)
    events = recent_events(150, 4_000, seed=95, dup_every=40)
    leads = sorted({e["lead_id"] for e in events})
    worker = worker_factory(s)
    api = api_factory(s)
    produce(s, events)
    wait_caught_up(s, [worker], timeout=120)
    # The leads' state is spread over the three masters, and each lead sits in one slot.
    owners = set()
    for n in cluster:
        c = redis.Redis.from_url(n.url)
        try:
            if c.keys("ls:{*"):
                owners.add(n.url)
        finally:
            c.close()
    assert len(owners) == 3, "the leads' keys did not spread over the masters"
    assert len({lead_slot(lead) for lead in leads}) > 100
    assert_features_match_replay(worker, events)
    for lead in leads[:5]:
        status, raw = api.get(f"/leads/{quote(lead, safe='')}")
        assert status == 200, raw
        assert orjson.loads(raw)["score"]["lead_id"] == lead
    assert api.get("/ready")[0] == 200


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[list[Service]]:
    nodes = start_cluster(tmp_path, masters=3, replicas=1)
    try:
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def test_a_master_killed_mid_stream_loses_nothing_when_writes_wait_for_a_replica(
    replicated, settings_factory, worker_factory, tmp_path
):
    """Redis replicates asynchronously: a master killed with writes its replica never got
    loses them. The test makes that window wide: the replica is paused for 8 s while the
    master keeps taking writes (more than the sockets buffer, and past a small replica output
    buffer, so the master drops the link), then the master is killed and the replica
    promoted. With LEADSCORE_REDIS_WAIT_REPLICAS=1 a batch is committed only once a replica
    has its writes; the worker whose batch could not be made durable exits, and a restart (as
    a supervisor does) redelivers everything not committed. Features end equal to the offline
    replay. (The same run with the wait off: 66 of 200 leads' features differed.)"""
    s = settings_factory(redis_url=replicated[0].url, redis_cluster=True, redis_wait_replicas=1)
    events = recent_events(200, 30_000, seed=96)
    first = worker_factory(s)
    feeder = Feeder(s, events, burst=2_000, rate=1_500.0)
    feeder.start()
    try:
        _wait(
            lambda: metric_total(first) >= 3_000, "the worker never scored", time.monotonic() + 60
        )
        _fail_over(replicated, master=1, replica=4, tmp_path=tmp_path)
        time.sleep(3.0)  # keep feeding through the new master
    finally:
        sent = feeder.stop()
    worker = _caught_up(s, first, worker_factory)
    assert_features_match_replay(worker, sent)
    ids = {r["event_id"] for r in read_to_end(s, "scores")}
    missing = {e["event_id"] for e in sent} - ids
    assert not missing, f"{len(missing)} events without a score record"
    print(f"failover: first worker exited={first.proc.poll() is not None}, {len(sent)} sent")


def _fail_over(nodes: list[Service], *, master: int, replica: int, tmp_path: Path) -> None:
    """Pause the replica, let the master take writes it won't get (a small replica output
    buffer makes it drop the link instead of buffering them), kill the master, resume the
    replica until it is promoted, and restart the dead node (it rejoins as a replica)."""
    victim, standby = nodes[master], nodes[replica]
    assert victim.proc is not None and standby.proc is not None
    m = redis.Redis.from_url(victim.url)
    try:
        m.config_set("client-output-buffer-limit", "replica 65536 32768 1")
    finally:
        m.close()
    os.kill(standby.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(8.0)
        victim.proc.kill()
        victim.proc.wait(10)
    finally:
        os.kill(standby.proc.pid, signal.SIGCONT)
    promoted = redis.Redis.from_url(standby.url)
    try:
        _wait(
            lambda: promoted.info("replication")["role"] == "master",
            "the replica was never promoted",
            time.monotonic() + 60,
        )
        # Until the dead node is back as its replica, the new master has none, and batches
        # on its slots can't be made durable (the worker stops rather than commit them).
        port = int(victim.url.rsplit(":", 1)[1].split("/")[0])
        nodes[master], _ = _node(tmp_path, port)
        _wait(
            lambda: promoted.info("replication")["connected_slaves"] >= 1,
            "the restarted node did not rejoin as a replica",
            time.monotonic() + 60,
        )
    finally:
        promoted.close()


def _caught_up(s, first, worker_factory):  # type: ignore[no-untyped-def]
    """The first worker caught up, or, if its agent died (a batch it could not make durable),
    a restarted one caught up; the worker that did it."""
    deadline = time.monotonic() + 150
    while first.proc.poll() is None:
        if consumer_lag(s) == 0:
            return first
        assert time.monotonic() < deadline, first.log_tail()
        time.sleep(0.5)
    assert first.proc.returncode != 0
    worker = worker_factory(s, timeout=120)
    wait_caught_up(s, [worker], timeout=150)
    return worker


def test_a_store_that_must_wait_for_a_replica_refuses_when_there_is_none(redis_url):
    """The single test Redis has no replica: waiting for one times out and says so; not
    waiting returns at once."""
    import asyncio

    import redis.asyncio as aioredis

    from leadscore.features.exceptions import FeatureStoreUnavailableError
    from leadscore.features.store import RedisFeatureStore

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await RedisFeatureStore(client).durable()
            store = RedisFeatureStore(client, wait_replicas=1, wait_timeout_ms=50)
            with pytest.raises(FeatureStoreUnavailableError, match="0 of 1 Redis replicas"):
                await store.durable()
        finally:
            await client.aclose()

    asyncio.run(run())
