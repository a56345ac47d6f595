"""``leadscore up``: a standalone setup on this machine, the embedded broker and Redis with a
worker (and optionally the API), until Ctrl-C. ``demo`` is the same with simulated traffic."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from leadscore.infra.topics import ensure_topics
from leadscore.settings import Settings
from leadscore.tooling.broker_watch import P99_LIMIT_S, STORED_LIMIT, BrokerWatch
from leadscore.tooling.embedded import (
    Service,
    free_port,
    spawn_command,
    spawn_worker,
    start_broker,
    start_redis,
    wait_worker_ready,
)
from leadscore.tooling.exceptions import ServiceStartError


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_up(
    settings: Settings,
    *,
    kafka_port: int | None,
    redis_port: int | None,
    api_port: int | None,
    say: Callable[[str], None],
    as_json: bool = False,
) -> int:
    """Start everything, print where producers and clients connect, wait; 1 if the worker
    (or the API) died, 0 after Ctrl-C or SIGTERM."""
    log_dir = Path(tempfile.mkdtemp(prefix="leadscore-up-"))
    services: list[Service] = []
    procs: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        say("starting the embedded broker and Redis ...")
        services.append(start_broker(log_dir, port=kafka_port))
        services.append(start_redis(log_dir, port=redis_port))
        live = settings.model_copy(
            update={
                "kafka_bootstrap": services[0].url,
                "redis_url": services[1].url,
                "web_port": settings.web_port or free_port(),
            }
        )
        ensure_topics(live)
        say(f"starting a worker (registry {live.registry_root}) ...")
        procs.append(spawn_worker(live, log_dir / "worker.log"))
        wait_worker_ready(procs[0], live.web_port, log_dir / "worker.log", timeout=120)
        addresses = {
            "LEADSCORE_KAFKA_BOOTSTRAP": services[0].url,
            "LEADSCORE_REDIS_URL": services[1].url,
            "worker": f"http://127.0.0.1:{live.web_port}",
            "logs": str(log_dir),
        }
        if api_port is not None:
            procs.append(spawn_command(live, log_dir / "api.log", "api", "--port", str(api_port)))
            addresses["api"] = f"http://127.0.0.1:{api_port}"
        _announce(addresses, say, as_json)
        watch = BrokerWatch(live, say, worker_port=live.web_port)
        while all(p.poll() is None for p in procs):
            watch.poll()
            time.sleep(0.5)
        dead = next(p for p in procs if p.poll() is not None)
        name = "worker" if dead is procs[0] else "api"
        tail = (log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
        say(f"the {name} exited with code {dead.returncode}:\n" + "\n".join(tail))
        return 1
    except KeyboardInterrupt:
        say("stopping ...")
        return 0
    except ServiceStartError as exc:
        say(f"leadscore up: {exc}")
        return 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        for svc in reversed(services):
            svc.stop()
        shutil.rmtree(log_dir, ignore_errors=True)


def _announce(addresses: dict[str, str], say: Callable[[str], None], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(addresses).decode(), flush=True)
        return
    print(f"export LEADSCORE_KAFKA_BOOTSTRAP={addresses['LEADSCORE_KAFKA_BOOTSTRAP']}")
    print(f"export LEADSCORE_REDIS_URL={addresses['LEADSCORE_REDIS_URL']}", flush=True)
    say(
        f"up: worker {addresses['worker']}"
        + (f", API {addresses['api']}" if "api" in addresses else "")
        + "; produce events to leads.web/email/crm/social/enrichment (keyed by lead_id) at "
        "the broker above; scores on leads.scores. Ctrl-C stops everything (the data is in "
        "memory only)."
    )
    say(
        "the embedded broker is for trying things: it slows with every batch it holds and "
        f"never frees one, so event-to-score p99 stays under {P99_LIMIT_S * 1000:.0f} ms for "
        f"at most about the first {STORED_LIMIT:,} produce requests (docs/performance.md). "
        "A watchdog here says when it nears that or stalls, and what to do."
    )
