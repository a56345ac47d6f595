"""Shadow records that never reach a broker are reported, so their batch is not
acknowledged (delivery reports come for failures only)."""

from __future__ import annotations

import asyncio
import socket

from leadscore.streamer.publisher import ShadowSink


def test_undelivered_shadow_records_are_reported() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = ShadowSink(
        {"bootstrap.servers": f"127.0.0.1:{port}", "message.timeout.ms": 1000, "log_level": 0},
        "leads.scores.shadow",
    )
    sink.send([("lead-1", b"{}"), ("lead-2", b"{}")])
    errors = asyncio.run(sink.delivered(timeout=10))
    assert len(errors) == 2
    assert all("not delivered" in str(e) for e in errors)
    assert asyncio.run(sink.delivered(timeout=1)) == []  # reported once
