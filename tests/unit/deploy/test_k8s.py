"""The Kubernetes manifests (deploy/k8s): there is no cluster and no kustomize binary here, so
they are checked offline. Core objects against Kubernetes' OpenAPI schemas
(kubernetes-validate), the KEDA and prometheus-operator objects against their CRDs' schemas
(vendored in schemas/, see its README), and the wiring against the code: every setting,
command, probe path, topic, consumer group and Service they name must be the real one.

The PrometheusRule is generated from deploy/prometheus/alerts.yml; after changing the alerts,
``python -m tests.unit.deploy.test_k8s`` writes it again."""

from __future__ import annotations

import copy
import functools
import ipaddress
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

import leadscore
from leadscore.cli import build_parser
from leadscore.infra.topics import INPUT_TOPICS
from leadscore.settings import Settings
from tests.unit.deploy.settings_env import credentials, not_settings, settings_from

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy/k8s"
BASE = K8S / "base"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
RULES = BASE / "prometheusrule.yaml"
SCHEMAS = Path(__file__).parent / "schemas"

#: Kubernetes releases the core objects are validated against (kubernetes-validate bundles
#: 1.25-1.37): the oldest the README claims, and the newest it bundles.
K8S_VERSIONS = ("1.30", "1.37")
#: Custom resources and the vendored schema of each (apiVersion, kind).
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}
#: The services of docker-compose.yml that run the image, by the component label here.
COMPONENTS = {"worker", "api", "crm-sync", "archive", "erasure", "monitor", "retrain"}
WORKLOADS = {"Deployment", "CronJob"}
#: The pods' temp directory (Python's default in the image), not this machine's.
POD_TMP = "/tmp"  # noqa: S108


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@functools.cache
def _kustomization() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return doc


@functools.cache
def _objects() -> tuple[dict[str, Any], ...]:
    return tuple(obj for name in _kustomization()["resources"] for obj in _load(BASE / name))


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [obj for obj in _objects() if obj["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    (obj,) = [obj for obj in _of_kind(kind) if obj["metadata"]["name"] == name]
    return obj


def _pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: dict[str, Any] = spec["template"]
    return template


def _workloads() -> dict[str, dict[str, Any]]:
    """The workloads by component label (one each)."""
    found = [obj for obj in _objects() if obj["kind"] in WORKLOADS]
    by_component = {obj["metadata"]["labels"]["app.kubernetes.io/component"]: obj for obj in found}
    assert len(by_component) == len(found), "two workloads share a component label"
    return by_component


def _container(component: str) -> dict[str, Any]:
    (container,) = _pod_template(_workloads()[component])["spec"]["containers"]
    return container


def _config() -> dict[str, str]:
    data: dict[str, str] = _named("ConfigMap", "leadscore-config")["data"]
    return data


def _settings() -> Settings:
    """What every pod reads: the ConfigMap (each container's envFrom) and nothing else."""
    return settings_from(_config())


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _port(container: dict[str, Any], name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name_or_number]
    return int(port)


# --- the kustomization ---------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_and_nothing_else():
    listed = _kustomization()["resources"]
    on_disk = sorted(p.name for p in BASE.iterdir() if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert len(set(listed)) == len(listed)
    assert all(name.endswith(".yaml") for name in listed)
    # The example Secret stays out: applying the base never writes a credential.
    assert SECRET_EXAMPLE.parent != BASE and SECRET_EXAMPLE.is_file()
    assert not any(obj["kind"] == "Secret" for obj in _objects())


def test_the_kustomization_labels_everything_and_lets_an_overlay_set_the_image():
    kustomization = _kustomization()
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    # `labels` without selectors: a label added later must not change immutable selectors.
    assert "commonLabels" not in kustomization
    (labels,) = kustomization["labels"]
    assert labels["pairs"] == {"app.kubernetes.io/part-of": "leadscore"}
    assert labels["includeSelectors"] is False
    (image,) = kustomization["images"]
    assert image == {"name": "leadscore", "newTag": leadscore.__version__}
    for component in COMPONENTS:
        assert _container(component)["image"] == image["name"], component


# --- schemas -------------------------------------------------------------------------------


def _core_objects() -> list[dict[str, Any]]:
    return [obj for obj in _objects() if (obj["apiVersion"], obj["kind"]) not in CRDS]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_validate_against_the_kubernetes_schemas(version):
    objects = [*_core_objects(), *_load(SECRET_EXAMPLE)]
    assert {obj["kind"] for obj in objects} >= {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "CronJob",
        "Secret",
    }
    errors = []
    for obj in objects:
        try:
            # strict: no field the schema does not name (a misspelt one would be dropped).
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(_error(obj, exc))
    assert errors == []


def _error(obj: dict[str, Any], exc: jsonschema.ValidationError) -> str:
    where = ".".join(str(part) for part in exc.absolute_path)
    return f"{obj['kind']} {obj['metadata']['name']}: {where}: {exc.message}"


def _strict(schema: Any) -> Any:
    """``schema`` as the API server applies a CRD's schema: an object takes only the fields it
    names (unless it says otherwise), and ``nullable`` admits null."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


#: How the vendored schemas name Kubernetes' ObjectMeta (resolved to Kubernetes' own).
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


@functools.cache
def _definitions() -> dict[str, Any]:
    """Kubernetes' definitions as kubernetes-validate bundles them (strict)."""
    bundled = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = bundled / f"v{K8S_VERSIONS[-1]}.0-local-strict/_definitions.json"
    defs: dict[str, Any] = json.loads(path.read_text())["$defs"]
    return defs


def _crd_schema(obj: dict[str, Any]) -> dict[str, Any]:
    """The vendored schema of ``obj``'s kind, made strict, with Kubernetes' ObjectMeta."""
    text = (SCHEMAS / CRDS[obj["apiVersion"], obj["kind"]]).read_text()
    assert text.count(f'"{OBJECT_META}#"') == 1
    text = text.replace(f'"{OBJECT_META}#"', f'"#/$defs/{OBJECT_META}"')
    schema: dict[str, Any] = _strict(json.loads(text))
    return {**schema, "$defs": _definitions()}


def _custom_errors(obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(_crd_schema(obj))
    return [_error(obj, exc) for exc in validator.iter_errors(obj)]


def test_custom_resources_validate_against_their_crd_schemas():
    custom = [obj for obj in _objects() if (obj["apiVersion"], obj["kind"]) in CRDS]
    assert {obj["kind"] for obj in custom} == {"ScaledObject", "ServiceMonitor", "PrometheusRule"}
    assert [error for obj in custom for error in _custom_errors(obj)] == []


def test_the_crd_schemas_refuse_what_the_api_server_refuses():
    scaled = copy.deepcopy(_named("ScaledObject", "leadscore-worker"))
    scaled["spec"]["maxReplicas"] = 4  # KEDA's field is maxReplicaCount
    (error,) = _custom_errors(scaled)
    assert "'maxReplicas' was unexpected" in error
    monitor = copy.deepcopy(_named("ServiceMonitor", "leadscore-worker"))
    monitor["metadata"]["labels"] = ["not", "a", "map"]  # checked against Kubernetes' ObjectMeta
    assert _custom_errors(monitor)


# --- settings, commands, security ----------------------------------------------------------


def _env_names(container: dict[str, Any]) -> list[str]:
    return [var["name"] for var in container.get("env", [])]


def test_every_leadscore_variable_is_a_setting_and_credentials_come_from_the_secret():
    containers = [_container(component) for component in COMPONENTS]
    names = [*_config(), *(name for c in containers for name in _env_names(c))]
    secret = _load(SECRET_EXAMPLE)[0]
    names += list(secret["stringData"])
    assert not_settings(names) == []
    assert {"LEADSCORE_KAFKA_BOOTSTRAP", "LEADSCORE_REDIS_URL"} <= set(_config())
    assert credentials().isdisjoint(_config()), "a credential in the ConfigMap"
    for container in containers:
        assert container["envFrom"] == [{"configMapRef": {"name": "leadscore-config"}}]
        for var in container.get("env", []):
            ref = var["valueFrom"]["secretKeyRef"]  # every env entry is a secret reference
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] == var["name"] and ref["key"] in secret["stringData"]
    # What the Secret holds under a setting's name is a credential (nothing else hides there).
    assert {name for name in secret["stringData"] if name.startswith("LEADSCORE_")} <= credentials()
    # The example holds placeholders only, never a value.
    assert set(secret["stringData"].values()) == {""}


def test_every_container_runs_a_real_command():
    parser = build_parser()
    assert set(_workloads()) == COMPONENTS
    for component in COMPONENTS:
        container = _container(component)
        # The image's ENTRYPOINT is `leadscore`: the manifests give its arguments only.
        assert "command" not in container, component
        parser.parse_args(container["args"])  # exits (SystemExit) on a wrong command
    assert _container("worker")["args"] == ["worker"]
    assert _container("api")["args"] == ["api"]
    # The CronJob runs one retrain per Job; --every would make it loop.
    assert _container("retrain")["args"] == ["retrain"]


def _dockerfile_uid() -> int:
    match = re.search(r"useradd --uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert match, "the Dockerfile no longer creates its user with a fixed uid"
    return int(match[1])


def test_pods_run_as_the_image_user_on_a_read_only_root_with_a_writable_tmp():
    uid = _dockerfile_uid()
    for component, workload in _workloads().items():
        pod = _pod_template(workload)["spec"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == uid, component
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, component
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, component
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        # Faust's data directory, the registry's copy of model versions and numba's cache
        # are under the temp directory: it must be writable.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts[POD_TMP]], component
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, component
    assert Path(_config()["NUMBA_CACHE_DIR"]).parent == Path(POD_TMP)
    # The monitor's state is the one thing kept across restarts: a volume it can write.
    monitor = _pod_template(_workloads()["monitor"])["spec"]
    mounts = {m["mountPath"]: m["name"] for m in _container("monitor")["volumeMounts"]}
    assert _config()["LEADSCORE_MONITOR_STATE_DIR"] in mounts
    claim = {v["name"]: v for v in monitor["volumes"]}[mounts["/state"]]
    assert _named("PersistentVolumeClaim", claim["persistentVolumeClaim"]["claimName"])
    assert monitor["securityContext"]["fsGroup"] == uid
    assert _workloads()["monitor"]["spec"]["strategy"] == {"type": "Recreate"}


def test_the_image_has_the_object_store_extra_the_manifests_need():
    # The registry and the archive are on s3:// (pods share no disk): without s3fs in the
    # image every pod would stop at its first look at the registry.
    config = _config()
    assert config["LEADSCORE_MODEL_REGISTRY"].startswith("s3://")
    assert config["LEADSCORE_ARCHIVE_ROOT"].startswith("s3://")
    extras = re.search(r'^ARG EXTRAS="([^"]*)"$', (ROOT / "Dockerfile").read_text(), re.M)
    assert extras, "the Dockerfile's EXTRAS argument moved"
    assert "s3" in extras[1].split(",")


# --- probes and ports ----------------------------------------------------------------------


def _worker_paths(tmp_path: Path) -> set[str]:
    """The paths the worker's web server serves: its Faust app's views, as the worker builds
    them (no broker is contacted until the app starts)."""
    from leadscore.streamer import views
    from leadscore.streamer.app import faust_app

    settings = _settings().model_copy(update={"faust_fastpath": False, "data_dir": tmp_path})
    app = faust_app(settings)
    views.register(app, rt=None)  # type: ignore[arg-type]  # the views use it only when called
    return set(app.web.views)


def _api_paths(tmp_path: Path) -> set[str]:
    from leadscore.api.app import create_app

    settings = _settings().model_copy(update={"model_registry": None, "model_dir": tmp_path})
    return {route.path for route in create_app(settings).routes}  # type: ignore[attr-defined]


def test_probes_hit_paths_the_services_serve_on_the_ports_the_settings_give(tmp_path):
    settings = _settings()
    served = {
        "worker": _worker_paths(tmp_path / "worker"),
        "api": _api_paths(tmp_path / "api"),
        # prometheus_client's server (sync, monitor) answers every path with the metrics;
        # the probes name the one Prometheus uses.
        "crm-sync": {"/metrics"},
        "monitor": {"/metrics"},
    }
    assert {"/health", "/ready", "/metrics"} <= served["worker"] & served["api"]
    ports = {
        "worker": settings.web_port,
        "api": settings.api_port,
        "crm-sync": settings.sync_metrics_port,
        "monitor": settings.monitor_port,
    }
    # Every address of the pod: the kubelet's probes and the Service reach it.
    assert ipaddress.ip_address(_config()["LEADSCORE_API_HOST"]).is_unspecified
    for component, paths in served.items():
        container = _container(component)
        (declared,) = container["ports"]
        assert declared["containerPort"] == ports[component], component
        probes = {k: v for k, v in container.items() if k.endswith("Probe")}
        assert "livenessProbe" in probes, component
        for kind, probe in probes.items():
            get = probe["httpGet"]
            assert get["path"] in paths, f"{component} {kind}: {get['path']}"
            assert _port(container, get["port"]) == ports[component], f"{component} {kind}"
    for component in ("worker", "api"):
        container = _container(component)
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    # The worker exits within its shutdown timeout: the kubelet waits longer before killing.
    worker = _pod_template(_workloads()["worker"])["spec"]
    assert worker["terminationGracePeriodSeconds"] > settings.shutdown_timeout_s


def test_the_retrain_runs_weekly_never_twice_at_once():
    cronjob = _workloads()["retrain"]
    spec = cronjob["spec"]
    minute, hour, day_of_month, month, day_of_week = spec["schedule"].split()
    assert (day_of_month, month) == ("*", "*")
    assert minute.isdigit() and hour.isdigit() and day_of_week.isdigit()
    assert spec["concurrencyPolicy"] == "Forbid"
    assert _pod_template(cronjob)["spec"]["restartPolicy"] == "Never"


# --- scaling -------------------------------------------------------------------------------


def test_the_scaledobject_scales_the_worker_on_its_consumer_groups_lag():
    settings = _settings()
    (scaled,) = _of_kind("ScaledObject")
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert _named("Deployment", target["name"]) is _workloads()["worker"]
    # KEDA owns the replica count: a count in the Deployment would reset it at every apply.
    assert "replicas" not in _workloads()["worker"]["spec"]
    triggers = spec["triggers"]
    assert {t["type"] for t in triggers} == {"kafka"}
    # Faust's consumer group is the app id; the worker reads these topics.
    assert {t["metadata"]["topic"] for t in triggers} == {settings.topic(t) for t in INPUT_TOPICS}
    assert len(triggers) == len(INPUT_TOPICS)
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == settings.app_id
        assert meta["bootstrapServers"] == settings.kafka_bootstrap
        assert int(meta["lagThreshold"]) > 0
        # A new group starts from the beginning, as the worker's consumer does.
        assert meta["offsetResetPolicy"] == "earliest"
    # A worker holds the same partition of every input topic: more would sit idle.
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= settings.topic_partitions


def test_disruption_budgets_cover_the_workers_and_the_api():
    budgets = _of_kind("PodDisruptionBudget")
    for component in ("worker", "api"):
        labels = _pod_template(_workloads()[component])["metadata"]["labels"]
        (budget,) = [b for b in budgets if _selects(b["spec"]["selector"]["matchLabels"], labels)]
        # Not minAvailable: at one replica that would block every node drain.
        assert budget["spec"]["maxUnavailable"] == 1


# --- Services and Prometheus ---------------------------------------------------------------


def _compose_jobs() -> set[str]:
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    return {job["job_name"] for job in prom["scrape_configs"]}


def _workload_behind(service: dict[str, Any]) -> str:
    """The component whose pods ``service`` selects (exactly one)."""
    selector = service["spec"]["selector"]
    (component,) = [
        component
        for component, workload in _workloads().items()
        if _selects(selector, _pod_template(workload)["metadata"]["labels"])
    ]
    return component


def test_every_service_reaches_a_container_port():
    for service in _of_kind("Service"):
        container = _container(_workload_behind(service))
        for port in service["spec"]["ports"]:
            assert _port(container, port["targetPort"]) == port["port"], service["metadata"]


def test_every_servicemonitor_selects_a_service_with_its_port_as_composes_job():
    monitors = _of_kind("ServiceMonitor")
    jobs = set()
    for monitor in monitors:
        spec = monitor["spec"]
        (service,) = [
            s
            for s in _of_kind("Service")
            if _selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        names = {port["name"] for port in service["spec"]["ports"]}
        for endpoint in spec["endpoints"]:
            assert endpoint["port"] in names, monitor["metadata"]["name"]
            assert endpoint["path"] == "/metrics"
        # The job label Prometheus gives the series: compose's job names, which the alerts and
        # the dashboard select on.
        jobs.add(service["metadata"]["labels"][spec["jobLabel"]])
        _workload_behind(service)
    assert jobs == {"worker", "api", "crm-sync", "monitor"} == _compose_jobs()


def test_the_monitor_scrapes_every_worker_through_a_headless_service():
    settings = _settings()
    (url,) = Settings.names(settings.monitor_scrape)
    parts = urlsplit(url)
    service = _named("Service", parts.hostname or "")
    assert _workload_behind(service) == "worker"
    # Headless: the name resolves to each worker pod, not to one virtual address.
    assert service["spec"]["clusterIP"] == "None"
    assert parts.port == settings.web_port and parts.path == "/metrics"


# --- alerts --------------------------------------------------------------------------------


def prometheus_rule() -> dict[str, Any]:
    """deploy/prometheus/alerts.yml as a PrometheusRule."""
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "leadscore", "labels": {"app.kubernetes.io/name": "leadscore"}},
        "spec": {"groups": alerts["groups"]},
    }


def test_the_prometheusrule_holds_the_alerts_of_alerts_yml():
    (rule,) = _load(RULES)
    assert rule == prometheus_rule(), "run: python -m tests.unit.deploy.test_k8s"


def _write_rules() -> None:
    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(str, text)
    header = (
        "# Generated from deploy/prometheus/alerts.yml: don't edit; change the alerts, then run\n"
        "#   python -m tests.unit.deploy.test_k8s\n"
        "# (tests/unit/deploy/test_k8s.py holds the two equal). The ServiceMonitors give the\n"
        '# series job="worker" and job="monitor", as compose\'s Prometheus does.\n'
    )
    body = yaml.dump(prometheus_rule(), Dumper=Dumper, sort_keys=False, width=100)
    RULES.write_text(header + body)


if __name__ == "__main__":
    _write_rules()
