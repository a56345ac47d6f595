"""What every leadscore process exports to Prometheus besides its own metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector


def process_registry() -> CollectorRegistry:
    """A new registry with the process (memory, CPU, open files), Python platform and garbage
    collector metrics ops expect from any Prometheus target."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
