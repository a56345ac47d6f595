"""Sizing past one machine: workers, partitions, Redis shards and memory, broker bandwidth and
storage for a number of leads and an event rate, from per-event costs ``leadscore bench``
measured (docs/capacity.md gives the formula, the measurements and their caveats).

Every event id is kept 30 days, so at 1,000 events/s Redis holds 2.6 billion of them:

>>> round(plan(leads=100_000_000, rate=1_000).ids_per_lead, 2)
25.92
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from leadscore.features.definitions import DAY_MS, RETENTION_MS


@dataclass(frozen=True)
class Costs:
    """What one event, one lead and one kept event id cost (``per_event_costs`` of the bench)."""

    worker_us: float
    """Worker CPU per event in a burst (full micro-batches), on one Redis."""
    redis_us: float
    """Redis server CPU per event, on one Redis."""
    cluster_worker_us: float
    """Worker CPU per event on a Redis Cluster: today a store call per lead's slot."""
    cluster_redis_us: float
    """Redis CPU per event on a cluster, summed over its nodes."""
    lead_bytes: float
    """A lead's keys apart from its event ids: state, latest score, announced tier."""
    id_bytes_small: float
    """Per event id kept, while a lead holds at most ``Assumptions.small_set_max`` of them."""
    id_bytes_large: float
    """Per event id kept, above that (Redis switches the sorted set to a skiplist)."""
    bytes_in: float
    """An input record's key and value."""
    bytes_out: float
    """A score record's key and value."""


MEASURED = Costs(
    worker_us=152.5,
    redis_us=68.7,
    cluster_worker_us=717.7,
    cluster_redis_us=279.9,
    lead_bytes=1567.0,
    id_bytes_small=51.9,
    id_bytes_large=145.3,
    bytes_in=244.6,
    bytes_out=598.2,
)
"""Recorded in docs/performance.md ("Per-event costs", 2026-12-07): medians of three runs on
one Redis, means of two on a three-master cluster; ``lead_bytes`` is the 90-day history's
state plus a latest score record and an announced tier."""


@dataclass(frozen=True)
class Assumptions:
    """The operator's choices the plan rests on (docs/capacity.md says why these defaults)."""

    worker_utilisation: float = 0.6
    """Busy share of a worker's core at the planned rate: the rest drains a backlog."""
    redis_utilisation: float = 0.5
    """Busy share of a shard's (single-threaded) core."""
    shard_memory_gib: float = 16.0
    """Usable memory per Redis shard (maxmemory)."""
    memory_overhead: float = 1.5
    """Redis's memory over the sum of ``MEMORY USAGE``: expiry entries, fragmentation."""
    dedupe_days: float = RETENTION_MS / DAY_MS
    """How long the store keeps each event id for duplicate suppression."""
    small_set_max: int = 128
    """Redis's ``zset-max-listpack-entries``."""
    retention_days: float = 35.0
    """Input topics' retention: ``leadscore rebuild`` needs the 30 days a window reaches."""
    replication: int = 3
    """Broker replication factor."""
    partition_headroom: float = 2.0
    """Partitions per worker planned: partitions are hard to add later."""


@dataclass(frozen=True)
class Plan:
    leads: int
    rate: float
    cluster: bool
    """More than one shard: the cluster's per-event costs apply."""
    workers: int
    partitions: int
    """Per input topic (a worker takes the same partitions of all three)."""
    redis_shards: int
    shards_for_cpu: int
    shards_for_memory: int
    redis_memory_gib: float
    ids_per_lead: float
    broker_in_mb_s: float
    broker_out_mb_s: float
    input_storage_tb: float
    """Input topics over their retention, replicas included."""


def _ceil(x: float) -> int:
    # A hair of tolerance, so that 2.0000000001 workers (float noise) stay 2.
    return max(1, math.ceil(x - 1e-9))


def plan(leads: int, rate: float, costs: Costs = MEASURED, a: Assumptions = Assumptions()) -> Plan:
    """Size a deployment for ``leads`` live leads and ``rate`` events/s.

    Every event id is kept ``dedupe_days``, so Redis holds ``rate x dedupe`` ids whatever the
    number of leads; spread evenly, ``ids_per_lead`` of them per lead.

    >>> costs = Costs(100, 50, 400, 200, 1000, 50, 150, 250, 600)
    >>> p = plan(leads=1_000_000, rate=1_000, costs=costs, a=Assumptions(dedupe_days=1))
    >>> p.cluster, p.redis_shards, p.workers, p.partitions, round(p.redis_memory_gib, 2)
    (False, 1, 1, 4, 7.43)
    """
    ids = rate * a.dedupe_days * 86_400
    ids_per_lead = ids / leads
    id_bytes = costs.id_bytes_small if ids_per_lead <= a.small_set_max else costs.id_bytes_large
    memory = (leads * costs.lead_bytes + ids * id_bytes) * a.memory_overhead
    memory_gib = memory / 2**30
    shards_mem = _ceil(memory_gib / a.shard_memory_gib)
    shards_cpu = _ceil(rate * costs.redis_us / (1e6 * a.redis_utilisation))
    cluster = max(shards_mem, shards_cpu) > 1
    worker_us = costs.worker_us
    if cluster:
        shards_cpu = _ceil(rate * costs.cluster_redis_us / (1e6 * a.redis_utilisation))
        worker_us = costs.cluster_worker_us
    workers = _ceil(rate * worker_us / (1e6 * a.worker_utilisation))
    partitions = max(4, 2 ** math.ceil(math.log2(workers * a.partition_headroom)))
    return Plan(
        leads=leads,
        rate=rate,
        cluster=cluster,
        workers=workers,
        partitions=partitions,
        redis_shards=max(shards_mem, shards_cpu),
        shards_for_cpu=shards_cpu,
        shards_for_memory=shards_mem,
        redis_memory_gib=memory_gib,
        ids_per_lead=ids_per_lead,
        broker_in_mb_s=rate * costs.bytes_in / 1e6,
        broker_out_mb_s=rate * costs.bytes_out / 1e6,
        input_storage_tb=rate * costs.bytes_in * 86_400 * a.retention_days * a.replication / 1e12,
    )


GRID_LEADS = (1_000_000, 10_000_000, 100_000_000)
GRID_RATES = (1_000, 10_000, 100_000)


def _si(x: float) -> str:
    return f"{x / 1e6:g} M" if x >= 1e6 else f"{x / 1e3:g} k"


def table(costs: Costs = MEASURED, a: Assumptions = Assumptions()) -> str:
    """The plan for each of :data:`GRID_LEADS` x :data:`GRID_RATES`, as a Markdown table."""
    rows = [
        "| leads | events/s | workers | partitions | Redis shards (CPU / memory) "
        "| Redis memory | ids per lead | broker in / out | input topics stored |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for leads in GRID_LEADS:
        for rate in GRID_RATES:
            p = plan(leads, rate, costs, a)
            rows.append(
                f"| {_si(leads)} | {_si(rate)} | {p.workers} | {p.partitions} "
                f"| {p.redis_shards} ({p.shards_for_cpu} / {p.shards_for_memory}) "
                f"| {p.redis_memory_gib:,.0f} GiB | {p.ids_per_lead:,.0f} "
                f"| {p.broker_in_mb_s:,.2f} / {p.broker_out_mb_s:,.2f} MB/s "
                f"| {p.input_storage_tb:,.1f} TB |"
            )
    return "\n".join(rows)


def as_dict(p: Plan, costs: Costs = MEASURED, a: Assumptions = Assumptions()) -> dict[str, Any]:
    """The plan with the costs and assumptions it used, for ``--json``."""
    return {**asdict(p), "costs": asdict(costs), "assumptions": asdict(a)}


def with_overrides(base: Costs = MEASURED, **changes: float | None) -> Costs:
    """``base`` with the costs given (``None``: keep the measured one)."""
    return replace(base, **{k: v for k, v in changes.items() if v is not None})
