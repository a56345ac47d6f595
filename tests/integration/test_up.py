"""``leadscore up``: a standalone worker on the embedded broker and Redis, as a new user
starts it, fed by a plain producer at the printed address."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest

from leadscore.settings import Settings
from leadscore.tooling.embedded import free_port
from tests.integration.helpers import produce, read_to_end, recent_events

pytestmark = pytest.mark.integration


def test_up_prints_where_to_produce_and_scores_what_arrives(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LEADSCORE_")  # a new user's shell: nothing set
    }
    env["LEADSCORE_WEB_PORT"] = str(free_port())
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "leadscore", "up", "--kafka-port", str(free_port()), "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the worker is ready
        assert line, proc.stderr.read().decode() if proc.stderr else ""
        where = orjson.loads(line)
        s = Settings(
            kafka_bootstrap=where["LEADSCORE_KAFKA_BOOTSTRAP"],
            redis_url=where["LEADSCORE_REDIS_URL"],
            app_id=f"up-reader-{uuid.uuid4().hex[:6]}",
        )
        events = recent_events(10, 200, seed=91)
        produce(s, events)
        deadline = time.monotonic() + 60
        scored: set[str] = set()
        while scored != {e["event_id"] for e in events}:
            assert time.monotonic() < deadline, f"{len(scored)}/200 scored"
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            scored = {r["event_id"] for r in read_to_end(s, "scores")}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
