"""A real Prometheus server for integration tests, and the dashboard's queries to run on it.

``start_prometheus`` writes a config that scrapes the given ``host:port`` targets every second
(and evaluates ``rule_file`` every second), starts ``/usr/bin/prometheus`` (Debian package
``prometheus``) as a child process on a free local port and waits until it is ready.
``dashboard_queries`` reads every PromQL expression of the Grafana dashboard with Grafana's
template variables replaced, so a test can check that each panel returns data.

No tests here: helpers only.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMETHEUS = Path("/usr/bin/prometheus")
READY_TIMEOUT_S = 30.0

# Grafana's built-in interval variables and what they become in a test scraping every second.
_GRAFANA_INTERVALS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
}
_INTERVAL_VAR = re.compile(r"\$(?:\{(__\w+)\}|(__\w+)\b)")
# A regex matcher whose value holds a template variable ($var, ${var}, ${var:format}).
_VAR_MATCHER = re.compile(r'=~\s*"[^"]*\$(?:\{\w+(?::\w+)?\}|\w+)[^"]*"')
_ANY_VAR = re.compile(r"\$(?:\{\w+(?::\w+)?\}|\w+)")


class PrometheusError(RuntimeError):
    """Prometheus did not start, or a query failed."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Prom:
    """A running Prometheus child process and its HTTP API."""

    url: str
    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - local http
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400/422/503 carry an error body
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise PrometheusError(f"GET {url}: HTTP {exc.code}") from exc
        if body.get("status") != "success":
            raise PrometheusError(
                f"GET {url}: {body.get('errorType', 'error')}: {body.get('error', body)}"
            )
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query now: a list of ``{"metric": {...}, "value": [t, v]}``
        (a scalar or string result comes back as one such item with an empty ``metric``).
        Raises ``PrometheusError`` on a bad expression or any error status."""
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Polls ``expr`` until it returns a non-empty result and returns it; raises
        ``TimeoutError`` (with the scrape targets' health) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no result for {expr!r} in {timeout:.0f} s; targets: {self.target_health()}"
                )
            time.sleep(0.25)

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) of the loaded rule file."""
        data = self._get("/api/v1/alerts")
        alerts: list[dict[str, Any]] = data["alerts"]
        return alerts

    def target_health(self) -> list[tuple[str, str, str]]:
        """(job, scrape url, health and last error) of every active target."""
        data = self._get("/api/v1/targets", {"state": "active"})
        return [
            (t["labels"].get("job", ""), t["scrapeUrl"], f"{t['health']} {t['lastError']}".strip())
            for t in data["activeTargets"]
        ]

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    def stop(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> Prom:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _write_config(directory: Path, targets: dict[str, list[str]], rule_file: Path | None) -> Path:
    # JSON is YAML: no YAML library needed to write it.
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(hosts)}]}
            for job, hosts in targets.items()
        ],
    }
    if rule_file is not None:
        config["rule_files"] = [str(Path(rule_file).resolve())]
    path = directory / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_prometheus(
    tmp_path: Path,
    targets: dict[str, list[str]],
    rule_file: Path | None = None,
    *,
    binary: Path = PROMETHEUS,
    timeout: float = READY_TIMEOUT_S,
) -> Prom:
    """Starts Prometheus scraping ``targets`` (job name -> ``host:port`` list, /metrics) every
    second, with ``rule_file`` evaluated every second, its data and log under ``tmp_path``.
    Returns once ``/-/ready`` answers 200; raises ``PrometheusError`` with the log's tail if
    it doesn't within ``timeout`` seconds or exits. Call ``stop()`` (or use it in a ``with``)."""
    if not binary.exists():
        raise PrometheusError(f"{binary} not found: apt-get install prometheus")
    directory = Path(tmp_path) / "prometheus"
    directory.mkdir(parents=True, exist_ok=True)
    config = _write_config(directory, targets, rule_file)
    log_path = directory / "prometheus.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    prom = Prom(url=url, process=process, config_path=config, log_path=log_path)
    deadline = time.monotonic() + timeout
    while not _ready(url):
        if process.poll() is not None:
            raise PrometheusError(
                f"prometheus exited with {process.returncode}:\n{_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            prom.stop()
            raise PrometheusError(
                f"prometheus not ready at {url} in {timeout:.0f} s:\n{_tail(log_path)}"
            )
        time.sleep(0.2)
    return prom


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        # a collapsed row keeps its panels inside it
        yield from _walk_panels(panel.get("panels") or [])


def substitute_variables(expr: str) -> str:
    """``expr`` with Grafana's variables replaced: the interval ones by fixed durations,
    any other variable inside a ``=~"..."`` matcher by ``.*`` (every value). A variable left
    anywhere else raises ``ValueError``: the test couldn't know what to put there."""
    out = _INTERVAL_VAR.sub(
        lambda m: _GRAFANA_INTERVALS.get(m.group(1) or m.group(2), m.group(0)), expr
    )
    out = _VAR_MATCHER.sub('=~".*"', out)
    if _ANY_VAR.search(out):
        raise ValueError(f"template variable outside a =~ matcher in {expr!r}")
    return out


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, rows' nested panels included,
    with the template variables substituted (``substitute_variables``)."""
    dashboard = json.loads(Path(path).read_text())
    queries = []
    for panel in _walk_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                queries.append((panel.get("title", ""), substitute_variables(expr)))
    return queries
