"""The capacity model (``leadscore.tooling.capacity``): its arithmetic, worked by hand, and
docs/capacity.md's table, which must be the one the formula gives."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from leadscore.cli import main
from leadscore.tooling.capacity import MEASURED, Assumptions, Costs, plan, table

COSTS = Costs(
    worker_us=100.0,
    redis_us=50.0,
    cluster_worker_us=400.0,
    cluster_redis_us=200.0,
    lead_bytes=1000.0,
    id_bytes_small=50.0,
    id_bytes_large=150.0,
    bytes_in=250.0,
    bytes_out=600.0,
)
DOC = Path(__file__).parents[3] / "docs" / "capacity.md"


def test_a_load_one_redis_holds_uses_the_single_redis_costs() -> None:
    # 1,000 events/s kept 1 day: 86.4 M ids, 86.4 a lead (compact sets, 50 bytes each);
    # (1e6 x 1,000 + 86.4e6 x 50) x 1.5 = 7.98e9 bytes = 7.43 GiB: one 16 GiB shard.
    p = plan(1_000_000, 1_000, COSTS, Assumptions(dedupe_days=1))
    assert p.ids_per_lead == pytest.approx(86.4)
    assert p.redis_memory_gib == pytest.approx(7.98e9 / 2**30)
    assert (p.cluster, p.redis_shards, p.shards_for_cpu, p.shards_for_memory) == (False, 1, 1, 1)
    # 1,000 x 100 us / (1e6 x 0.6) = 0.17 of a worker; at least four partitions.
    assert (p.workers, p.partitions) == (1, 4)
    assert p.broker_in_mb_s == pytest.approx(0.25) and p.broker_out_mb_s == pytest.approx(0.6)
    # 1,000 x 250 bytes x 86,400 s x 35 days x 3 replicas.
    assert p.input_storage_tb == pytest.approx(1000 * 250 * 86_400 * 35 * 3 / 1e12)


def test_past_one_shard_the_cluster_costs_apply() -> None:
    # 30 days of ids: 2.592e9, 2,592 a lead, so skiplists at 150 bytes an id:
    # (1e6 x 1,000 + 2.592e9 x 150) x 1.5 = 5.847e11 bytes = 544.6 GiB: 35 shards.
    p = plan(1_000_000, 100_000 / 100, COSTS)
    assert p.redis_memory_gib == pytest.approx(5.847e11 / 2**30)
    assert (p.cluster, p.shards_for_memory) == (True, 35)
    big = plan(1_000_000, 100_000, COSTS)
    # 1e5 x 200 us / (1e6 x 0.5) = 40 shards for CPU; 1e5 x 400 us / (1e6 x 0.6) = 66.7 ->
    # 67 workers, and 2 x 67 = 134 -> 256 partitions (the next power of two).
    assert (big.shards_for_cpu, big.workers, big.partitions) == (40, 67, 256)


def test_a_lead_with_more_ids_than_a_compact_set_holds_costs_the_skiplist_rate() -> None:
    a = Assumptions(dedupe_days=1)
    at_limit = plan(1_000, 128 * 1_000 / 86_400, COSTS, a)
    beyond = plan(1_000, 129 * 1_000 / 86_400, COSTS, a)
    assert at_limit.ids_per_lead == pytest.approx(128)
    per_id = (at_limit.redis_memory_gib * 2**30 / 1.5 - 1_000 * 1_000) / 128_000
    assert per_id == pytest.approx(50.0)
    per_id = (beyond.redis_memory_gib * 2**30 / 1.5 - 1_000 * 1_000) / 129_000
    assert per_id == pytest.approx(150.0)


def _documented(marker: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"<!-- {marker} -->") + len(f"<!-- {marker} -->")
    return text[start : text.index(f"<!-- /{marker} -->")].strip()


def test_the_documented_tables_are_the_ones_the_formula_gives() -> None:
    assert _documented("capacity-table") == table()
    assert _documented("capacity-table-1d") == table(a=Assumptions(dedupe_days=1))


def test_the_command_prints_the_table_and_one_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capacity"]) == 0
    assert capsys.readouterr().out.strip() == table()
    assert main(["capacity", "--leads", "1000000", "--rate", "1000", "--json"]) == 0
    got = orjson.loads(capsys.readouterr().out)
    assert got["leads"] == 1_000_000 and got["workers"] == plan(1_000_000, 1_000).workers
    assert got["costs"]["worker_us"] == MEASURED.worker_us
    with pytest.raises(SystemExit) as exc:
        main(["capacity", "--leads", "5"])
    assert exc.value.code == 2
