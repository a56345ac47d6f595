"""Retention settings: each topic's config from one function, the state TTL refused when it
would not outlive the longest feature window, and drift between settings and a broker."""

from __future__ import annotations

import pytest

from leadscore.errors import ConfigError
from leadscore.features.store import DEFAULT_TTL_S
from leadscore.infra.topics import (
    INPUT_TOPICS,
    ConfigDrift,
    all_topics,
    config_drift,
    retention_ms,
    topic_configs,
)
from leadscore.settings import Settings, load_settings

DAY_MS = 86_400_000


def settings(**overrides: object) -> Settings:
    return Settings(kafka_bootstrap="127.0.0.1:9", topic_prefix="t.", **overrides)  # type: ignore[arg-type]


def test_every_topic_leadscore_creates_has_a_config_in_creation_order() -> None:
    s = settings()
    assert list(topic_configs(s)) == all_topics(s)
    assert {"t.leads.erasure", "t.leads.erasure.audit"} <= set(topic_configs(s))


def test_score_topics_are_compacted_the_rest_deleted_after_their_settings() -> None:
    s = settings(
        input_retention_days=40,
        dlq_retention_days=3,
        alerts_retention_days=2,
        erasure_request_retention_days=5,
        erasure_audit_retention_days=1000,
    )
    cfg = topic_configs(s)
    for name in ("t.leads.scores", "t.leads.scores.shadow"):
        assert cfg[name]["cleanup.policy"] == "compact"
        assert "retention.ms" not in cfg[name]  # compacted only: the latest score stays
        assert int(cfg[name]["delete.retention.ms"]) > 0
        assert int(cfg[name]["max.compaction.lag.ms"]) > 0
    want = {
        **{f"t.leads.{name}": 40 for name in INPUT_TOPICS},
        "t.leads.dlq": 3,
        "t.leads.alerts": 2,
        "t.leads.erasure": 5,
        "t.leads.erasure.audit": 1000,
    }
    for name, days in want.items():
        assert cfg[name] == {"cleanup.policy": "delete", "retention.ms": str(days * DAY_MS)}


def test_zero_days_keeps_the_input_topics_forever() -> None:
    assert retention_ms(0) == "-1"
    cfg = topic_configs(settings(input_retention_days=0))
    assert cfg["t.leads.web"]["retention.ms"] == "-1"


def test_defaults_keep_what_rebuild_needs_and_the_audit_for_years() -> None:
    cfg = topic_configs(settings())
    assert int(cfg["t.leads.web"]["retention.ms"]) > 30 * DAY_MS  # rebuild's 30-day need
    assert int(cfg["t.leads.erasure.audit"]["retention.ms"]) >= 5 * 365 * DAY_MS
    assert int(cfg["t.leads.erasure"]["retention.ms"]) <= 7 * DAY_MS


def test_the_state_ttl_default_is_the_stores_and_is_what_the_setting_says() -> None:
    assert Settings().state_ttl_s == DEFAULT_TTL_S
    assert settings(state_idle_ttl_days=45).state_ttl_s == 45 * 86_400


@pytest.mark.parametrize("days", ["30", "7", "0", "-3"])
def test_a_state_ttl_not_longer_than_the_longest_window_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, days: str
) -> None:
    monkeypatch.setenv("LEADSCORE_STATE_IDLE_TTL_DAYS", days)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    msg = str(exc.value)
    assert msg.startswith("LEADSCORE_STATE_IDLE_TTL_DAYS: ")
    assert "longest feature window (30 days)" in msg
    assert "31 or more" in msg


def test_a_state_ttl_past_the_window_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADSCORE_STATE_IDLE_TTL_DAYS", "31")
    assert load_settings().state_idle_ttl_days == 31


@pytest.mark.parametrize(
    "name",
    [
        "LEADSCORE_DLQ_RETENTION_DAYS",
        "LEADSCORE_ALERTS_RETENTION_DAYS",
        "LEADSCORE_ERASURE_REQUEST_RETENTION_DAYS",
        "LEADSCORE_ERASURE_AUDIT_RETENTION_DAYS",
    ],
)
def test_a_topic_retention_of_zero_days_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "0")
    with pytest.raises(ConfigError, match=f"^{name}: "):
        load_settings()


def test_drift_names_each_differing_key_and_ignores_missing_topics() -> None:
    wanted = {
        "a": {"cleanup.policy": "compact", "delete.retention.ms": "7"},
        "b": {"cleanup.policy": "delete", "retention.ms": "5"},
        "c": {"cleanup.policy": "delete", "retention.ms": "5"},
    }
    reported = {
        "a": {"cleanup.policy": "compact"},
        "b": {"cleanup.policy": "delete", "retention.ms": "5", "segment.ms": "1"},
        "c": None,
    }
    assert config_drift(wanted, reported) == [ConfigDrift("a", "delete.retention.ms", "7", None)]
    reported["b"] = {"cleanup.policy": "compact,delete", "retention.ms": "5"}
    assert config_drift(wanted, reported)[1] == ConfigDrift(
        "b", "cleanup.policy", "delete", "compact,delete"
    )
