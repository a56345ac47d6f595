"""docker compose can't run here (no Docker engine): keep the file correct by parsing it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from leadscore.cli import build_parser
from tests.unit.deploy.settings_env import not_settings

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
    assert "ports" not in worker, "a fixed host port stops `--scale worker=3`"
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


def _assignments(text: str) -> dict[str, str]:
    import re

    pattern = r'^(?:ARG )?(BUILD_PACKAGES|RUNTIME_PACKAGES|EXTRAS)="([^"]*)"$'
    return {m[1]: m[2] for m in re.finditer(pattern, text, re.M)}


def test_the_rootfs_smoke_script_installs_what_the_dockerfile_installs():
    image = _assignments((ROOT / "Dockerfile").read_text())
    script = _assignments((ROOT / "deploy/smoke-rootfs.sh").read_text())
    assert set(image) == {"BUILD_PACKAGES", "RUNTIME_PACKAGES", "EXTRAS"}
    assert image == script
    assert "libgomp1" in image["RUNTIME_PACKAGES"].split()
    # Every service's extra, none of the demo's.
    assert set(image["EXTRAS"].split(",")) == {"postgres", "parquet", "s3", "webhook", "api"}
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM debian:bookworm-slim AS build" in text and "USER leadscore" in text
    assert "HEALTHCHECK" in text


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
    assert monitor["depends_on"]["kafka"] == {"condition": "service_healthy"}
    assert "monitor" in doc["volumes"]


def _services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_compose_validates_against_the_compose_spec():
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert exe, "check-jsonschema is a dev dependency: pip install -e '.[dev]'"
    done = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_leadscore_variable_in_compose_is_a_setting():
    seen = set()
    for name, svc in _services().items():
        for var in svc.get("environment", {}):
            if var.startswith("LEADSCORE_"):
                seen.add(var)
                assert not not_settings([var]), f"{name}: {var} is not a setting"
    assert {"LEADSCORE_REDIS_URL", "LEADSCORE_API_KEYS", "LEADSCORE_ARCHIVE_ROOT"} <= seen


def test_every_service_restarts_reports_its_health_and_runs_a_real_command():
    parser = build_parser()
    services = _services()
    assert {"api", "crm-sync", "archive", "erasure", "retrain", "monitor", "seed-model"} <= set(
        services
    )
    for name, svc in services.items():
        if name == "seed-model":  # one-shot, in the demo profile only
            assert svc["profiles"] == ["demo"] and svc["restart"] == "no"
            steps = svc["command"][0].split("&&")
            for step in steps:
                argv = shlex.split(step)
                assert argv[0] == "leadscore"
                parser.parse_args(argv[1:])
            continue
        assert svc["restart"] == "unless-stopped", name
        assert "healthcheck" in svc, name
        if svc.get("build"):
            parser.parse_args(svc["command"])  # exits (SystemExit) on a wrong command
    kafka = services["kafka"]["environment"]
    assert "HOST://localhost:29092" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert "--appendonly" in services["redis"]["command"]
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert jobs["api"]["dns_sd_configs"][0]["names"] == ["api"]
    assert jobs["crm-sync"]["static_configs"] == [{"targets": ["crm-sync:6068"]}]
