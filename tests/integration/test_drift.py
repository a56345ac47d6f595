"""Drift on real services: a worker counts every scored vector into the model's reference
bins, the monitor scrapes the counters and tests the last 5,000 vectors. A changed mix of
industries, countries and lead sources (the simulator's data drift, fixed seed) must raise the
alarm for drifted features within 5,000 events; the same run without the drift raises none."""

from __future__ import annotations

import uuid

from leadscore.features.definitions import DAY_MS
from leadscore.jobs.train_events import train_from_event_list
from leadscore.schemas.validation import parse_ts_ms
from leadscore.tooling.embedded import free_port
from leadscore.tooling.simulator import SimConfig, simulate, simulated_events
from tests.integration.helpers import produce, wait_caught_up
from tests.integration.monitoring import scrape, spaced, start_monitor, tagged, total, value

HISTORY_END_MS = 1_780_315_200_000  # 2026-06-01T12:00Z: a fixed calendar
DAYS = 80
DRIFT_DAY = 60
LIVE_EVENTS = 5000
# Many leads with few events each: new leads (the only drifted ones) soon make up a good
# part of a window, as they do where leads turn over quickly.
CONFIG = SimConfig(
    leads=3000, events=40000, seed=11, start_ms=HISTORY_END_MS - DAYS * DAY_MS, days=DAYS
)
DRIFTED = {"industry", "country", "lead_source"}
RATE = 3000  # events per second
SPACING = 400  # places between a lead's events (see monitoring.spaced)


def _config(drift: bool) -> SimConfig:
    return SimConfig(
        leads=CONFIG.leads,
        events=CONFIG.events,
        seed=CONFIG.seed,
        start_ms=CONFIG.start_ms,
        days=CONFIG.days,
        data_drift_day=DRIFT_DAY if drift else None,
    )


def _alarms(settings_factory, worker_factory, tmp_path, model_dir, version: str, drift: bool):
    tag = f"d{uuid.uuid4().hex[:6]}-"
    cut = (CONFIG.start_ms or 0) + DRIFT_DAY * DAY_MS
    events = tagged(simulate(_config(drift)), tag)
    warm = [e for e in events if (parse_ts_ms(e["ts"]) or 0) < cut]
    live = [e for e in events if (parse_ts_ms(e["ts"]) or 0) >= cut][:LIVE_EVENTS]
    s = settings_factory(
        model_dir=model_dir,
        monitor_port=free_port(),
        monitor_state_dir=tmp_path / f"monitor-{tag}",
        monitor_interval_s=1.0,
        monitor_drift_window=LIVE_EVENTS,
    )
    worker = worker_factory(s)
    s = s.model_copy(update={"monitor_scrape": f"{worker.url}/metrics"})
    mon = start_monitor(s, tmp_path / f"monitor-{tag}.log")
    try:
        for part in (warm, live):
            produce(s, spaced(part, SPACING), rate=RATE, linger_ms=20)
            wait_caught_up(s, [worker], timeout=180)
            counted = total(
                scrape(f"{worker.url}/metrics"), "leadscore_score_bin_total", model_version=version
            )
            m = mon.wait(
                lambda m, n=counted: (
                    value(m, "leadscore_drift_vectors_seen", model_version=version) == n
                ),
                f"{counted} vectors counted",
            )
        window = value(m, "leadscore_drift_window_vectors", model_version=version)
        assert window is not None and LIVE_EVENTS * 0.9 <= window <= LIVE_EVENTS * 1.1, window
        alarmed = {
            dict(labels)["feature"]
            for (name, labels), v in m.items()
            if name == "leadscore_drift_alarm" and dict(labels)["model_version"] == version and v
        }
        count = value(m, "leadscore_drift_alarms", model_version=version)
        assert count == len(alarmed)
        return alarmed
    finally:
        mon.stop()
        worker.stop()


def test_data_drift_raises_the_alarm_and_no_drift_raises_none(
    settings_factory, worker_factory, tmp_path
):
    cut = (CONFIG.start_ms or 0) + DRIFT_DAY * DAY_MS
    history = [e for e in simulated_events(CONFIG) if e.ts_ms < cut]
    model_dir = tmp_path / "models"
    version = train_from_event_list(history, horizon_ms=14 * DAY_MS, out_dir=model_dir, force=True)[
        "version"
    ]

    steady = _alarms(settings_factory, worker_factory, tmp_path, model_dir, version, drift=False)
    assert steady == set(), f"no drift was injected, yet these features alarmed: {steady}"

    drifted = _alarms(settings_factory, worker_factory, tmp_path, model_dir, version, drift=True)
    print(f"drift alarms: undrifted {sorted(steady)}, drifted {sorted(drifted)}")
    assert drifted & DRIFTED, f"the mix changed, yet no drifted feature alarmed: {drifted}"
    # The score may move with the mix; a behavioural feature has no reason to.
    assert drifted <= DRIFTED | {"score"}, drifted
