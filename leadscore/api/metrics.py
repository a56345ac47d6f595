"""The API's Prometheus metrics (one registry per app)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from leadscore.infra.prom import process_registry


@dataclass
class ApiMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    rate_limited: Counter
    ready: Gauge
    model_info: Gauge

    @classmethod
    def create(cls) -> ApiMetrics:
        r = process_registry()
        return cls(
            registry=r,
            requests=Counter(
                "leadscore_api_requests",
                "API requests by route template, method and status",
                ["route", "method", "status"],
                registry=r,
            ),
            latency=Histogram(
                "leadscore_api_request_seconds",
                "API request handling time by route template",
                ["route"],
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                registry=r,
            ),
            rate_limited=Counter(
                "leadscore_api_rate_limited",
                "requests refused with 429, by API key name",
                ["key"],
                registry=r,
            ),
            ready=Gauge("leadscore_api_ready", "1 when /ready answers 200", registry=r),
            model_info=Gauge(
                "leadscore_api_model_info",
                "the champion model this replica scores with",
                ["version"],
                registry=r,
            ),
        )

    def set_model(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version).set(1)
