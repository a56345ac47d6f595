"""Summing the workers' bin counters and the sliding window over them."""

from __future__ import annotations

import http.server
import threading

import numpy as np
from prometheus_client import generate_latest

from leadscore.model.drift import LiveBins, build_reference
from leadscore.monitor.scrape import Scraper, Window, parse
from leadscore.streamer.metrics import Metrics


def _worker_metrics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 1))
    ref = build_reference(x, ["n"], ["numeric"], [()], rng.uniform(size=500))
    live = LiveBins(ref)
    m = Metrics.create()
    m.live.track("v1", live)
    return m, live, ref, x


def test_parse_reads_what_the_worker_exports():
    m, live, ref, x = _worker_metrics()
    live.add(x[:100], np.full(100, 0.5))
    got = parse(generate_latest(m.registry).decode())
    assert sum(v for (ver, feat, _), v in got.items() if ver == "v1" and feat == "n") == 100
    assert sum(v for (ver, feat, _), v in got.items() if feat == "score") == 100


class _Serve(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()
        self.wfile.write(type(self).body)

    def log_message(self, *args) -> None:
        pass


def test_increases_sum_across_scrapes_and_survive_a_restart():
    m, live, ref, x = _worker_metrics()
    server = http.server.HTTPServer(("127.0.0.1", 0), _Serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scraper = Scraper([f"http://127.0.0.1:{server.server_port}/metrics"])
    try:
        live.add(x[:100], np.full(100, 0.5))
        _Serve.body = generate_latest(m.registry)
        scraper.scrape()
        live.add(x[100:300], np.full(200, 0.5))
        _Serve.body = generate_latest(m.registry)
        scraper.scrape()
        assert scraper.counts("v1", ref)[-1].sum() == 300
        # The worker restarts: its counters begin again at 0.
        m2, live2, _, _ = _worker_metrics()
        live2.add(x[:50], np.full(50, 0.5))
        _Serve.body = generate_latest(m2.registry)
        scraper.scrape()
        assert scraper.counts("v1", ref)[-1].sum() == 350
    finally:
        server.shutdown()


def test_window_is_the_last_n_vectors():
    w = Window(size=100)
    snap = np.zeros((1, 3))
    for total in (0, 40, 90, 150, 230):
        snap = np.array([[total, 0, 0]], dtype=float)
        w.push(snap)
    cur = w.current()
    assert cur is not None and cur[0, 0] == 230 - 90  # the newest snapshot >= 100 back
