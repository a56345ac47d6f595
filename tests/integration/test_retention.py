"""Retention for real: the topics leadscore creates carry their configured retention (read
back from the broker), ``leadscore retention --apply`` sets it on topics created without it,
and the worker's Redis keys expire after ``LEADSCORE_STATE_IDLE_TTL_DAYS``.

The embedded broker stores and reports topic configs but enforces none of them (it deletes
and compacts nothing); these tests show what was set, not that a broker deletes by it."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka.admin import AdminClient, NewTopic

from leadscore.cli import main
from leadscore.features.store import lead_keys
from leadscore.infra.topics import broker_topic_configs, config_drift, topic_configs
from leadscore.settings import Settings
from leadscore.streamer.runtime import Runtime

from .helpers import as_events

pytestmark = pytest.mark.integration

DAY_S = 86_400


def test_created_topics_carry_their_retention_configs(settings_factory) -> None:
    s = settings_factory(dlq_retention_days=3, input_retention_days=40)
    wanted = topic_configs(s)
    reported = broker_topic_configs(s, wanted)
    assert config_drift(wanted, reported) == []
    assert reported[s.topic("dlq")]["retention.ms"] == str(3 * DAY_S * 1000)
    assert reported[s.topic("web")]["retention.ms"] == str(40 * DAY_S * 1000)
    assert reported[s.topic("scores")]["cleanup.policy"] == "compact"


def test_apply_sets_the_configured_retention_on_topics_made_without_it(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}."
    for name in list(os.environ):
        if name.startswith("LEADSCORE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LEADSCORE_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("LEADSCORE_TOPIC_PREFIX", prefix)
    # As an older release made them: scores compacted with no tombstone settings, the DLQ
    # with the broker's default retention.
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    made = admin.create_topics(
        [
            NewTopic(f"{prefix}leads.scores", 1, 1, config={"cleanup.policy": "compact"}),
            NewTopic(f"{prefix}leads.dlq", 1, 1),
        ]
    )
    for fut in made.values():
        fut.result(timeout=30)

    assert main(["retention", "--json"]) == 0
    before = orjson.loads(capsys.readouterr().out)
    rows = {t["topic"]: t for t in before["topics"]}
    assert rows[f"{prefix}leads.scores"]["differs"] == [
        "delete.retention.ms",
        "max.compaction.lag.ms",
    ]
    assert rows[f"{prefix}leads.dlq"]["differs"] == ["cleanup.policy", "retention.ms"]
    assert rows[f"{prefix}leads.web"]["broker"] is None  # not created: not the command's job

    assert main(["retention", "--apply", "--json"]) == 0
    after = orjson.loads(capsys.readouterr().out)
    set_ = {(c["topic"], c["key"]) for c in after["applied"]["topic_configs_set"]}
    assert set_ == {
        (f"{prefix}leads.scores", "delete.retention.ms"),
        (f"{prefix}leads.scores", "max.compaction.lag.ms"),
        (f"{prefix}leads.dlq", "cleanup.policy"),
        (f"{prefix}leads.dlq", "retention.ms"),
    }
    assert all(not t.get("differs") for t in after["topics"])
    assert after["warnings"] == []

    assert main(["retention", "--apply", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["applied"]["topic_configs_set"] == []


def test_the_worker_expires_lead_state_after_the_configured_idle_time(
    redis_url: str, tmp_path: Path
) -> None:
    # A database of its own: the store adopts (or starts) that database's state generation.
    url = redis_url.rsplit("/", 1)[0] + "/11"
    s = Settings(
        redis_url=url, kafka_bootstrap=None, model_dir=tmp_path / "models", state_idle_ttl_days=45
    )
    lead = f"L-ttl-{uuid.uuid4().hex[:8]}"
    event = {
        "event_id": f"e-{uuid.uuid4().hex}",
        "lead_id": lead,
        "source": "web",
        "type": "page_view",
        "ts": "2026-12-01T10:00:00Z",
        "attributes": {},
    }
    runtime = Runtime.build(s)

    async def apply() -> None:
        await runtime.store.open()
        try:
            updates = await runtime.store.apply_batch(as_events([event]))
            assert [u.outcome for u in updates] == ["ok"], updates
        finally:
            await runtime.store.close()
            await runtime.store.client.aclose()

    asyncio.run(apply())
    r = redis.Redis.from_url(url)
    try:
        keys = lead_keys(lead)
        ttls = {k: r.ttl(k) for k in (keys.state, keys.ids)}
        r.delete(*keys)
    finally:
        r.close()
    # 45 days, not the 37 of the default: the setting reached the Lua script.
    assert all(45 * DAY_S - 60 <= t <= 45 * DAY_S for t in ttls.values()), ttls
