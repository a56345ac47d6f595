"""``leadscore retention`` without Kafka: the report (text and JSON) says what is kept and for
how long from the settings, reads the archive's partitions, and says the broker was not read."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest

from leadscore.cli import main
from leadscore.infra.archive import archive_partitions
from leadscore.jobs.retention import describe_config, render_text, retention_report
from leadscore.settings import Settings
from leadscore.tooling.embedded import free_port

DAY_MS = 86_400_000


def _partition(root: Path, source: str, days_ago: int) -> None:
    ms = int(time.time() * 1000) - days_ago * DAY_MS
    day = time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))
    d = root / f"source={source}" / f"date={day}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "part-leads.web-0-000000000000-000000000001.parquet").write_bytes(b"")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Kafka, an archive of three partitions (one past a 10-day retention)."""
    for name in list(os.environ):
        if name.startswith("LEADSCORE_"):
            monkeypatch.delenv(name)
    root = tmp_path / "archive"
    for source, days in (("web", 20), ("web", 1), ("crm", 0)):
        _partition(root, source, days)
    monkeypatch.setenv("LEADSCORE_ARCHIVE_ROOT", str(root))
    monkeypatch.setenv("LEADSCORE_ARCHIVE_RETENTION_DAYS", "10")
    monkeypatch.setenv("LEADSCORE_STATE_IDLE_TTL_DAYS", "45")
    monkeypatch.setenv("LEADSCORE_DLQ_RETENTION_DAYS", "3")
    return root


def test_json_report_without_kafka(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["retention", "--json"]) == 0
    r = orjson.loads(capsys.readouterr().out)
    topics = {t["topic"]: t for t in r["topics"]}
    assert topics["leads.dlq"]["configured"]["retention.ms"] == str(3 * DAY_MS)
    assert topics["leads.dlq"]["configured_text"] == "deleted after 3 days"
    assert topics["leads.scores"]["configured"]["cleanup.policy"] == "compact"
    assert "leads.erasure.audit" in topics
    assert all("broker" not in t for t in r["topics"])  # nothing claimed from a broker
    assert r["broker"]["reachable"] is False
    assert "LEADSCORE_KAFKA_BOOTSTRAP is not set" in r["broker"]["error"]
    assert r["redis"]["lead_state_idle_ttl_days"] == 45
    assert r["redis"]["event_id_dedupe_days"] == 30
    assert r["redis"]["erasure_suppress_days"] == 30
    a = r["archive"]
    assert (a["root"], a["retention_days"], a["partitions"], a["past_retention"]) == (
        str(env),
        10,
        3,
        1,
    )
    assert a["oldest"] < a["newest"]
    assert r["models"]["kept"] == "until deleted"
    assert "applied" not in r


def test_text_report_names_each_topic_and_setting(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["retention"]) == 0
    out = capsys.readouterr().out
    for topic in ("leads.web", "leads.scores", "leads.dlq", "leads.erasure.audit"):
        assert f"  {topic}  -  " in out
    assert "deleted after 3 days" in out
    assert "expires 45 days after the lead's last update (LEADSCORE_STATE_IDLE_TTL_DAYS)" in out
    assert "3, from " in out and "1 past retention" in out
    assert "broker: not read: LEADSCORE_KAFKA_BOOTSTRAP is not set" in out
    assert "Applied" not in out


def test_apply_without_kafka_prunes_the_archive_and_says_what_it_skipped(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["retention", "--apply", "--json"]) == 0
    r = orjson.loads(capsys.readouterr().out)
    assert len(r["applied"]["archive_deleted"]) == 1
    assert r["applied"]["skipped"] == ["topics: LEADSCORE_KAFKA_BOOTSTRAP is not set"]
    assert r["archive"]["partitions"] == 2 == len(archive_partitions(str(env)))
    assert r["archive"]["past_retention"] == 0


def test_an_unreachable_kafka_is_reported_not_fatal(tmp_path: Path) -> None:
    s = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", archive_root=None)
    r = retention_report(s, now_ms=int(time.time() * 1000), kafka_timeout=1.0)
    assert r["broker"]["reachable"] is False
    assert "did not answer" in r["broker"]["error"]
    assert "not read: no archive root" in render_text(r)


def test_settings_that_break_rebuild_or_retrain_are_warned_about() -> None:
    s = Settings(kafka_bootstrap=None, input_retention_days=20, archive_retention_days=60)
    text = render_text(retention_report(s, now_ms=0))
    assert "LEADSCORE_INPUT_RETENTION_DAYS=20" in text
    assert "LEADSCORE_ARCHIVE_RETENTION_DAYS=60" in text
    quiet = retention_report(Settings(kafka_bootstrap=None), now_ms=0)
    assert quiet["warnings"] == []


def test_configs_in_words_as_kafka_reports_them() -> None:
    # Apache Kafka reports every config, defaults included; the embedded broker only those set.
    kafka_compact = {
        "cleanup.policy": "compact",
        "retention.ms": "604800000",
        "delete.retention.ms": "86400000",
        "max.compaction.lag.ms": "9223372036854775807",
    }
    assert describe_config(kafka_compact) == (
        "compacted: the latest record per lead, until a tombstone erases it; tombstones kept "
        "1 day; no bound on when older records are compacted"
    )
    both = {**kafka_compact, "cleanup.policy": "compact,delete"}
    assert describe_config(both).endswith("; and deleted after 7 days")
    assert describe_config({"cleanup.policy": "delete", "retention.ms": "-1"}) == "kept forever"
    assert describe_config({}) == "deleted after the broker's default retention"
    assert describe_config({"retention.ms": str(730 * DAY_MS)}) == (
        "deleted after 730 days (2 years)"
    )
