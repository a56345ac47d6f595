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
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert jobs["worker"]["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 6066, "refresh_interval": "15s"}
    ]
    assert jobs["monitor"]["static_configs"] == [{"targets": ["monitor:6067"]}]
    mounts = services["prometheus"]["volumes"]
    for name in ("prometheus.yml", "alerts.yml"):
        assert f"./deploy/prometheus/{name}:/etc/prometheus/{name}:ro" in mounts
        assert (ROOT / "deploy/prometheus" / name).is_file()
    assert "/etc/prometheus/alerts.yml" in prom["rule_files"]
    assert "configs" not in doc
    assert worker["command"] == ["worker"]


def test_dockerfile_installs_every_package():
    text = (ROOT / "Dockerfile").read_text()
    for pkg in ("leadscore", "streamer", "features", "model", "schemas"):
        assert f"COPY {pkg} ./{pkg}" in text


def test_compose_provisions_grafana_and_runs_the_monitor():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    mounts = services["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts
    for mount in mounts:
        assert (ROOT / mount.split(":")[0]).is_dir()
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/leadscore.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["uid"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True
    monitor = services["monitor"]
    assert monitor["command"] == ["monitor"]
    assert monitor["environment"]["LEADSCORE_MONITOR_SCRAPE"] == "http://worker:6066/metrics"
    assert monitor["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert "monitor" in doc["volumes"]
