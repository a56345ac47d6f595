"""``leadscore sync``'s Prometheus metrics, served on a port of its own."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    start_http_server,
)

from leadscore.infra.prom import process_registry


@dataclass
class SyncMetrics:
    registry: CollectorRegistry
    records: Counter
    batches: Counter
    failures: Counter
    dead_lettered: Counter
    last_sync: Gauge

    @classmethod
    def create(cls) -> SyncMetrics:
        r = process_registry()
        m = cls(
            registry=r,
            records=Counter(
                "leadscore_sync_records",
                "score records written to the sink, by kind (score, tombstone)",
                ["kind"],
                registry=r,
            ),
            batches=Counter(
                "leadscore_sync_batches",
                "batches the sink took (offsets then committed)",
                registry=r,
            ),
            failures=Counter(
                "leadscore_sync_write_failures",
                "sink writes that raised (the sync then stops; offsets are not committed)",
                registry=r,
            ),
            dead_lettered=Counter(
                "leadscore_sync_dead_lettered_batches",
                "webhook batches written to the dead-letter file after their last try",
                registry=r,
            ),
            last_sync=Gauge(
                "leadscore_sync_last_success_timestamp_seconds",
                "when a batch was last written and committed",
                registry=r,
            ),
        )
        for kind in ("score", "tombstone"):
            m.records.labels(kind=kind)
        return m

    def serve(self, host: str, port: int) -> None:
        """``/metrics`` on ``host:port`` (a daemon thread)."""
        start_http_server(port, addr=host, registry=self.registry)

    def wrote(self, scores: int, tombstones: int) -> None:
        self.records.labels(kind="score").inc(scores)
        self.records.labels(kind="tombstone").inc(tombstones)
        self.batches.inc()
        self.last_sync.set(time.time())
