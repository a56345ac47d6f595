"""Real services for integration tests.

Kafka: ``LEADSCORE_KAFKA_BOOTSTRAP`` if set, else the embedded Tansu broker, else a
testcontainers Kafka where a Docker engine answers. Redis: ``LEADSCORE_REDIS_URL`` if it
answers, else the local one (127.0.0.1:6379), else an embedded redis-server, else
testcontainers. If none can be had the tests fail: they never pass without the services.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from leadscore.infra.topics import ensure_topics
from leadscore.settings import Settings
from leadscore.tooling.embedded import (
    Service,
    free_port,
    redis_answers,
    spawn_command,
    spawn_worker,
    start_broker,
    start_process,
    start_redis,
)
from leadscore.tooling.exceptions import ServiceStartError

from .helpers import BUCKET, ApiProcess, WorkerProcess

pytestmark = pytest.mark.integration


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means no usable engine
        return False


@pytest.fixture(scope="session")
def service_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="leadscore-it-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def kafka_bootstrap(service_dir: Path) -> Iterator[str]:
    env = os.environ.get("LEADSCORE_KAFKA_BOOTSTRAP")
    if env:
        yield env
        return
    errors = []
    svc: Service | None = None
    try:
        svc = start_broker(service_dir)
    except ServiceStartError as exc:
        errors.append(f"embedded broker: {exc}")
    if svc is not None:
        try:
            yield svc.url
        finally:
            svc.stop()
        return
    if _docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    pytest.fail("no Kafka-protocol broker: " + "; ".join(errors) + "; and no Docker engine")


@pytest.fixture(scope="session")
def redis_url(service_dir: Path) -> Iterator[str]:
    for url in (os.environ.get("LEADSCORE_REDIS_URL"), "redis://127.0.0.1:6379/0"):
        if url and redis_answers(url):
            yield url
            return
    try:
        svc = start_redis(service_dir)
    except ServiceStartError as exc:
        if _docker_available():
            from testcontainers.redis import RedisContainer

            with RedisContainer() as r:
                yield f"redis://{r.get_container_host_ip()}:{r.get_exposed_port(6379)}/0"
            return
        pytest.fail(f"no Redis: {exc}; and no Docker engine")
    try:
        yield svc.url
    finally:
        svc.stop()


@pytest.fixture
def settings_factory(kafka_bootstrap: str, redis_url: str, tmp_path: Path):
    """Settings with a unique topic prefix and app id, so tests never see each other's data."""

    def make(**overrides: object) -> Settings:
        uid = uuid.uuid4().hex[:8]
        base: dict[str, object] = {
            "kafka_bootstrap": kafka_bootstrap,
            "redis_url": redis_url,
            "topic_prefix": f"t{uid}.",
            "app_id": f"leadscore-test-{uid}",
            "model_dir": tmp_path / "models",
            "web_port": free_port(),
            "web_host": "127.0.0.1",
        }
        base.update(overrides)
        s = Settings(**base)  # type: ignore[arg-type]
        ensure_topics(s)
        return s

    return make


@pytest.fixture
def worker_factory(tmp_path: Path):
    workers: list[WorkerProcess] = []

    def start(s: Settings, *, wait_ready: bool = True, timeout: float = 90.0) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(workers)}.log"
        proc = spawn_worker(s, log_path)
        w = WorkerProcess(s, proc, log_path)
        workers.append(w)
        if wait_ready:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"worker exited with {proc.returncode}:\n{w.log_tail()}")
                try:
                    if w.get("/ready")[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"worker not ready in {timeout} s:\n{w.log_tail()}")
                time.sleep(0.3)
        return w

    yield start
    for w in workers:
        w.stop()


@pytest.fixture
def api_factory(tmp_path: Path):
    """Start ``leadscore api`` processes on the settings' Redis and registry."""
    apis: list[ApiProcess] = []

    def start(s: Settings, *, timeout: float = 60.0, **env: str) -> ApiProcess:
        port = free_port()
        log_path = tmp_path / f"api-{len(apis)}.log"
        proc = spawn_command(s, log_path, "api", "--port", str(port), **env)
        a = ApiProcess(s, proc, log_path, port=port)
        apis.append(a)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"api exited with {proc.returncode}:\n{a.log_tail()}")
            try:
                if a.get("/health")[0] == 200:
                    return a
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"api not up in {timeout} s:\n{a.log_tail()}")
            time.sleep(0.2)

    yield start
    for a in apis:
        a.stop()


@pytest.fixture
def object_store(tmp_path: Path) -> Iterator[dict[str, str]]:
    """moto's S3 server on a free port with one bucket; yields the broker's ``AWS_*`` env."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    try:
        svc = start_process("s3", args, tmp_path, endpoint, port, timeout=60)
    except ServiceStartError as exc:
        pytest.fail(f"moto's S3 server (a dev dependency: pip install -e '.[dev]'): {exc}")
    try:
        req = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")  # noqa: S310
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback
            assert r.status == 200
        yield {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
        }
    finally:
        svc.stop()
