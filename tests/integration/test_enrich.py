"""``leadscore enrich`` as a user runs it: a provider's CSV produced to the real broker while
a worker runs. The leads' features in Redis equal the offline replay of what reached the
topic (and the values the file says); the invalid row is reported and not sent; running the
same file again changes nothing (every event a duplicate)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from leadscore.settings import Settings
from leadscore.tooling.embedded import settings_env

from .helpers import (
    metric_total,
    offline_features,
    read_to_end,
    store_features,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

HEADER = "lead_id,observed_at,date,employees,revenue_band,industry_code,technologies,"
HEADER += "intent_topic,intent_score,provider"


def export(tmp_path: Path, tag: str) -> tuple[Path, list[str]]:
    """A provider's export over the last days: 12 leads, each with firmographics, a
    technology list and an intent signal, some rows with a time and some with a date; one
    row (line 2 + 12) has an intent score over 100."""
    now = datetime.now(UTC)
    leads = [f"E-{tag}-{i}" for i in range(12)]
    lines = [HEADER]
    for i, lead in enumerate(leads):
        when = now - timedelta(hours=5 + 7 * i)
        observed, day = (when.isoformat(), "") if i % 2 else ("", when.date().isoformat())
        techs = ["Salesforce;Snowflake", "HubSpot|Looker|SAP", "none"][i % 3]
        topic = ["Lead Scoring", "marketing automation", "ERP"][i % 3]
        lines.append(
            f"{lead},{observed},{day},{50 * (i + 1)},1M-10M,5415{i % 10},{techs},{topic},"
            f"{40 + 5 * i},{'bombora' if i % 4 else ''}"
        )
    lines.append(f"E-{tag}-bad,{now.isoformat()},,10,,,,crm,140,")
    path = tmp_path / "provider-export.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, leads


def enrich(s: Settings, path: Path) -> tuple[dict, str]:
    """Run ``leadscore enrich FILE --json`` as a user would; its summary and its stderr."""
    done = subprocess.run(  # noqa: S603 - our own CLI, as a user runs it
        [sys.executable, "-P", "-m", "leadscore", "enrich", str(path), "--json"],
        env=settings_env(s),
        capture_output=True,
        timeout=60,
        check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == 0, err[-2000:]
    return orjson.loads(done.stdout.splitlines()[-1]), err


def test_enrich_feeds_the_worker_and_a_second_run_changes_nothing(
    settings_factory, worker_factory, tmp_path
):
    t0 = time.monotonic()
    s = settings_factory()
    worker = worker_factory(s)
    tag = uuid.uuid4().hex[:8]
    path, leads = export(tmp_path, tag)

    summary, err = enrich(s, path)
    assert summary["rows"] == 13 and summary["rejected"] == 1
    assert summary["events"] == {"firmographics": 12, "technographics": 12, "intent": 12}
    assert summary["produced"] == 36
    assert "provider-export.csv line 14: rejected, intent: " in err
    wait_caught_up(s, [worker], timeout=60)

    sent = read_to_end(s, "enrichment")
    assert len(sent) == 36 and {e["lead_id"] for e in sent} == set(leads)
    stored = store_features(s, [*leads, f"E-{tag}-bad"])
    assert stored[f"E-{tag}-bad"] is None  # the rejected row's lead never reached the worker
    expected = offline_features(sent)
    assert {lead: stored[lead] for lead in leads} == expected
    # What the file says, read back from Redis (not only equal to the replay).
    first = stored[leads[0]]
    assert first is not None
    assert (first["firmo_employees"], first["firmo_industry_sector"]) == (50, "54")
    assert (first["tech_salesforce"], first["tech_snowflake"], first["tech_count"]) == (1, 1, 2)
    assert stored[leads[2]] is not None and stored[leads[2]]["tech_count"] == 0

    dups_before = metric_total(worker, "duplicate")
    again, _ = enrich(s, path)
    assert again["produced"] == 36
    wait_caught_up(s, [worker], timeout=60)
    assert len(read_to_end(s, "enrichment")) == 72
    assert metric_total(worker, "duplicate") - dups_before == 36
    assert store_features(s, leads) == expected
    assert time.monotonic() - t0 < 60, "the test is meant to stay short"
