"""The worker's start-up tuning: the garbage-collector settings and Faust's raw event schema."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import faust
import pytest
from faust.types import Message

from streamer import gc_tuning
from streamer.faust_fastpath import raw_schema


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tune_freezes_the_heap_and_spaces_out_young_passes(restore_gc: None) -> None:
    _, gen1, gen2 = gc.get_threshold()
    gc_tuning.tune(12_345)
    assert gc.get_threshold() == (12_345, gen1, gen2)
    assert gc.get_freeze_count() > 1000


def test_tune_with_zero_keeps_pythons_settings(restore_gc: None) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    gc_tuning.tune(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_raw_schema_events_carry_the_message_bytes() -> None:
    app = faust.App("raw-schema-test", broker="memory://")
    decode = raw_schema().compile(app)
    for key, value in ((b"L-1", b'{"a": 1}'), (None, b"\xff not json"), (b"L-2", None)):
        msg = Message("leads.web", 0, 7, 0.0, 0, {}, key, value, None)
        event = await decode(msg)
        assert event.key == key
        assert event.value == value
        assert event.message is msg
