"""``leadscore api`` as a CRM team meets it: a running process on the real Redis and model
registry, a trained model, and a worker that scored the same events on the real broker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from leadscore.api.auth import hash_key, new_key
from leadscore.features.definitions import DAY_MS
from leadscore.jobs.train_events import train_from_event_list
from leadscore.tooling.simulator import SimConfig, simulate, simulated_events
from tests.integration.helpers import enrichment_attributes, produce, read_to_end, wait_caught_up
from tests.integration.monitoring import tagged

pytestmark = pytest.mark.integration

#: A longer campaign: LEADSCORE_ST_EXAMPLES=500 LEADSCORE_ST_SEED=7 pytest -k schemathesis
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)


@pytest.fixture
def trained(settings_factory):
    """Settings whose registry holds a LightGBM model trained from a simulated history."""
    s = settings_factory()
    history = simulated_events(SimConfig(leads=300, events=6000, seed=71, days=30))
    train_from_event_list(history, horizon_ms=14 * DAY_MS, out_dir=s.model_dir, force=True)
    return s


def _keys() -> tuple[str, str, str]:
    full, reader = new_key(), new_key()
    entries = f"crm={hash_key(full)}:read+score,dash={hash_key(reader)}:read"
    return full, reader, entries


def _social_events(events: list[dict]) -> list[dict]:
    """Social events for every third lead, comments with their text (of each sentiment, more
    than this small simulated history has): the API scores them from the text as the
    worker does."""
    from leadscore.schemas.validation import format_ts_ms, parse_ts_ms

    last: dict[str, int] = {}
    for e in events:
        last[e["lead_id"]] = max(last.get(e["lead_id"], 0), parse_ts_ms(e["ts"]) or 0)
    texts = ("Brilliant product, we love it!", "Awful support, very slow.", "Any webinar soon?")
    out = []
    for n, (lead, ts) in enumerate(sorted(last.items())[::3]):
        for k, typ in enumerate(("comment", "share", "comment")):
            attrs = {"platform": "linkedin", "text": texts[(n + k) % 3]} if typ == "comment" else {}
            out.append(
                {
                    "event_id": f"{lead}-social-{k}",
                    "lead_id": lead,
                    "source": "social",
                    "type": typ,
                    "ts": format_ts_ms(ts - (k + 1) * 3_600_000),
                    "attributes": attrs,
                }
            )
    return out


def _enrichment_events(events: list[dict]) -> list[dict]:
    """Enrichment events for every other lead: firmographics, technographics and intent
    signals around the surge cut-off, before the lead's last event (more kinds and edge
    values than this small simulated history has)."""
    from leadscore.schemas.validation import format_ts_ms, parse_ts_ms

    last: dict[str, int] = {}
    for e in events:
        last[e["lead_id"]] = max(last.get(e["lead_id"], 0), parse_ts_ms(e["ts"]) or 0)
    types = ("firmographics", "technographics", "intent", "intent", "intent")
    return [
        {
            "event_id": f"{lead}-enrichment-{k}",
            "lead_id": lead,
            "source": "enrichment",
            "type": typ,
            "ts": format_ts_ms(ts - (k + 1) * 5_400_000),
            "attributes": enrichment_attributes(typ, n + k),
        }
        for n, (lead, ts) in enumerate(sorted(last.items())[::2])
        for k, typ in enumerate(types)
    ]


def _request_events(events: list[dict]) -> list[dict]:
    return [
        {k: e[k] for k in ("event_id", "source", "type", "ts", "attributes") if k in e}
        for e in events
    ]


def test_post_score_equals_the_workers_record_for_the_same_events(
    trained, worker_factory, api_factory
):
    full, _reader, entries = _keys()
    s = trained.model_copy(update={"api_keys": entries})
    worker = worker_factory(s)
    api = api_factory(s)
    auth = {"Authorization": f"Bearer {full}"}
    events = tagged(simulate(SimConfig(leads=40, events=1200, seed=72, days=20)), uuid.uuid4().hex)
    events += _social_events(events) + _enrichment_events(events)
    produce(s, events)
    wait_caught_up(s, [worker], timeout=120)
    latest: dict[str, dict] = {}
    for rec in read_to_end(s, "scores"):
        latest[rec["lead_id"]] = rec  # a lead's records are in order on its partition
    by_lead: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        by_lead[e["lead_id"]].append(e)
    assert set(latest) == set(by_lead)
    assert not latest[next(iter(latest))]["model_version"].startswith("rules")

    requests = []
    sentiment_counts = 0
    enriched: defaultdict[str, int] = defaultdict(int)
    for lead, evs in by_lead.items():
        body = {"lead_id": lead, "events": _request_events(evs)}
        requests.append(body)
        status, raw = api.request("POST", "/score", body, auth)
        assert status == 200, raw
        got, want = orjson.loads(raw), latest[lead]
        _assert_same_score(got, want)
        sentiment_counts += got["features"]["social_positive_comments_30d"]
        sentiment_counts += got["features"]["social_negative_comments_30d"]
        for name in ("firmo_employees", "firmo_industry_sector", "tech_salesforce"):
            enriched[name] += got["features"][name] is not None
        enriched["intent_surges_30d"] += got["features"]["intent_surges_30d"]
        # The features it scored are the live store's for that lead.
        status, raw = api.request("GET", f"/leads/{quote(lead, safe='')}", None, auth)
        assert status == 200, raw
        view = orjson.loads(raw)
        assert view["features"] == got["features"]
        assert view["score"] == want
        status, raw = api.request("GET", f"/leads/{quote(lead, safe='')}/score", None, auth)
        assert status == 200 and orjson.loads(raw) == want

    assert sentiment_counts > 0  # comments were scored from their text on both sides
    # Enrichment events were scored on both sides: profile fields, flags and surges.
    assert min(enriched.values()) > 0 and len(enriched) == 4, dict(enriched)
    # The batch endpoint answers the same, in order.
    status, raw = api.request("POST", "/score:batch", {"leads": requests}, auth)
    assert status == 200, raw
    results = orjson.loads(raw)["results"]
    assert [r["lead_id"] for r in results] == [r["lead_id"] for r in requests]
    for r in results:
        _assert_same_score(r, latest[r["lead_id"]])

    # POST /score changed nothing: the store still holds what the worker wrote.
    status, raw = api.request(
        "GET", f"/leads/{quote(requests[0]['lead_id'], safe='')}/score", None, auth
    )
    assert orjson.loads(raw) == latest[requests[0]["lead_id"]]


def _assert_same_score(got: dict, want: dict) -> None:
    assert got["lead_id"] == want["lead_id"]
    assert got["model_version"] == want["model_version"]
    assert got["tier"] == want["tier"] and got["score_100"] == want["score_100"]
    assert got["score"] == pytest.approx(want["score"], abs=1e-12)
    assert [(r["feature"], r["value"]) for r in got["reasons"]] == [
        (r["feature"], r["value"]) for r in want["reasons"]
    ]
    for a, b in zip(got["reasons"], want["reasons"], strict=True):
        assert a["contribution"] == pytest.approx(b["contribution"], abs=1e-12)


def test_keys_scopes_limits_and_problem_details(settings_factory, worker_factory, api_factory):
    full, reader, entries = _keys()
    s = settings_factory(api_keys=entries, api_max_body_bytes=64 * 1024)
    worker_factory(s)  # creates the feature state the API reads
    api = api_factory(s)
    body = {"profile": {"industry": "saas", "company_size": "51-200"}}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}):
        status, raw = api.request("POST", "/score", body, headers)
        assert status == 401, (headers, raw)
        problem = orjson.loads(raw)
        assert problem["status"] == 401 and problem["title"] and problem["detail"]
    assert api.request("GET", "/leads/x", None, {})[0] == 401
    # A key without the score scope may read but not score.
    assert api.request("POST", "/score", body, {"X-API-Key": reader})[0] == 403
    assert api.request("GET", "/leads/nobody", None, {"X-API-Key": reader})[0] == 404
    status, raw = api.request("POST", "/score", body, {"X-API-Key": full})
    assert status == 200, raw
    scored = orjson.loads(raw)
    assert scored["features"]["industry"] == "saas" and scored["lead_id"] is None
    # Bad input: a 4xx problem that says where.
    bad = {"events": [{"source": "web", "type": "converted", "ts": "2026-12-01T00:00:00Z"}]}
    status, raw = api.request("POST", "/score", bad, {"X-API-Key": full})
    assert status == 422
    assert orjson.loads(raw)["errors"][0]["pointer"] == "/events/0"
    big = {"profile": {"industry": "x" * 100_000}}
    status, raw = api.request("POST", "/score", big, {"X-API-Key": full})
    assert status == 413 and orjson.loads(raw)["status"] == 413
    # Service endpoints need no key (probes and Prometheus).
    for path in ("/health", "/ready", "/metrics", "/openapi.json"):
        assert api.get(path)[0] == 200, path
    metrics = api.get("/metrics")[1].decode()
    assert 'leadscore_api_requests_total{method="POST",route="/score",status="401"} 3.0' in metrics
    assert "process_resident_memory_bytes" in metrics


def test_api_refuses_to_serve_unauthenticated_on_a_public_address(settings_factory, tmp_path):
    from leadscore.tooling.embedded import settings_env

    s = settings_factory(api_host="0.0.0.0")  # noqa: S104 - the refusal under test
    done = subprocess.run(
        [sys.executable, "-P", "-m", "leadscore", "api"],
        env=settings_env(s),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert b"LEADSCORE_API_KEYS" in done.stderr


def test_schemathesis_finds_no_server_error_and_no_contract_breach(
    trained, worker_factory, api_factory, tmp_path: Path
):
    full, _reader, entries = _keys()
    s = trained.model_copy(update={"api_keys": entries})
    worker = worker_factory(s)
    api = api_factory(s)
    events = tagged(simulate(SimConfig(leads=10, events=200, seed=73, days=10)), "st-")
    produce(s, events)
    wait_caught_up(s, [worker], timeout=60)
    # Half the generated lead ids are real ones, so the 200 answers are checked too.
    leads = sorted({e["lead_id"] for e in events})
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f"[dictionaries.leads]\nvalues = {orjson.dumps(leads).decode()}\n\n"
        '[parameters]\n"path.lead_id" = { dictionary = "leads", probability = 0.5 }\n'
    )
    st = shutil.which("st", path=os.path.dirname(sys.executable)) or "st"
    done = subprocess.run(
        [
            st,
            "--config-file",
            str(config),
            "run",
            f"{api.url}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            os.environ.get("LEADSCORE_ST_EXAMPLES", "50"),
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            os.environ.get("LEADSCORE_ST_SEED", "26"),
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--no-color",
            "-H",
            f"Authorization: Bearer {full}",
            "--report-dir",
            str(tmp_path / "schemathesis"),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
    )
    out = done.stdout
    print(out[out.find("SUMMARY") :])
    assert done.returncode == 0, (
        out[out.find("FAILURES") :][:6000] + done.stderr[-2000:] + api.log_tail()
    )
    assert "Tested: 7" in out, "an operation of the spec was not tested"
