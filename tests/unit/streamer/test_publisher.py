"""The worker's publisher: each lead's partition is remembered from its delivered records."""

from __future__ import annotations

import asyncio

from leadscore.streamer import publisher as publisher_module
from leadscore.streamer.publisher import Publisher
from tests.fakes import FakeSend


async def _batch(send: FakeSend, memory: dict[str, dict[str, int]], leads: list[str]) -> None:
    pub = Publisher(send, ("scores", "dlq", "alerts"), memory)
    await pub.emit([(lead, b"{}") for lead in leads], [(None, b"bad")])
    await pub.alerts([(leads[0], b"{}")])
    pub.remember(await asyncio.gather(*pub.pending))


async def test_partitions_are_passed_once_a_lead_has_been_delivered() -> None:
    send, memory = FakeSend(), {}
    await _batch(send, memory, ["L-1", "L-22"])
    assert [c[2] for c in send.calls] == [None, None, None, None]  # dlq, 2 scores, alert
    expected = {"L-1": sum(b"L-1") % 4, "L-22": sum(b"L-22") % 4}
    assert memory == {"scores": expected, "alerts": {"L-1": expected["L-1"]}}

    send.calls.clear()
    await _batch(send, memory, ["L-22", "L-333"])
    assert send.calls == [
        ("dlq", None, None),
        ("scores", b"L-22", expected["L-22"]),
        ("scores", b"L-333", None),
        ("alerts", b"L-22", None),
    ]
    assert memory["scores"]["L-333"] == sum(b"L-333") % 4


async def test_the_memory_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(publisher_module, "PARTITION_MEMORY", 3)
    send, memory = FakeSend(), {}
    await _batch(send, memory, ["a", "b", "c"])
    await _batch(send, memory, ["d"])
    assert len(memory["scores"]) <= 3 and "d" in memory["scores"]
