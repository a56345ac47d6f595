"""docker compose can't run here (no Docker engine): keep the file correct by parsing it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def test_compose_has_the_production_stack_wired_together():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"kafka", "redis", "worker", "crm-sync", "prometheus", "grafana"} <= set(services)
    worker = services["worker"]
    env = worker["environment"]
    assert env["LEADSCORE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["LEADSCORE_REDIS_URL"].startswith("redis://redis:")
    assert set(worker["depends_on"]) == {"kafka", "redis"}
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    prom = doc["configs"]["prometheus_config"]["content"]
    assert "worker:6066" in prom
    assert worker["command"] == ["worker"]


def test_dockerfile_installs_every_package():
    text = (ROOT / "Dockerfile").read_text()
    for pkg in ("leadscore", "streamer", "features", "model", "schemas"):
        assert f"COPY {pkg} ./{pkg}" in text
