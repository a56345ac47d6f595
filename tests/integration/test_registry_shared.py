"""The registry on a local folder and on S3 (moto's server), the same way: versions, the
champion history and rollback, decisions, shadow and experiment pointers; on S3 a second
machine (another cache) sees one truth, and a worker reading the S3 registry hot-swaps."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from leadscore.cli import main
from leadscore.model.registry import Registry
from tests.fakes import save_worker_model

from .helpers import BUCKET

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def registry_root(request, tmp_path: Path, monkeypatch) -> str:
    if request.param == "local":
        return str(tmp_path / "models")
    env = request.getfixturevalue("object_store")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", env["AWS_ENDPOINT"])
    return f"s3://{BUCKET}/models-{time.time_ns()}"


def test_the_same_registry_on_a_folder_and_on_s3(registry_root: str, tmp_path: Path, capsys):
    for v in ("a", "b", "c"):
        save_worker_model(registry_root, v)
    reg = Registry(registry_root, cache=tmp_path / "cache-1")
    assert [v.version for v in reg.list()] == ["a", "b", "c"]
    assert reg.champion() == "c" and reg.champion_stack() == ["a", "b", "c"]
    reg.record_decision({"version": "c", "outcome": "forced"})
    reg.set_shadow("b")
    exp = reg.start_experiment("a", 0.1)

    # Another machine: its own cache, the same truth.
    other = Registry(registry_root, cache=tmp_path / "cache-2")
    assert other.champion() == "c" and other.shadow() == "b" and other.experiment() == exp
    other.verify("c")  # checksums, meta.json, and LightGBM in a child process
    assert (other.local("c") / "model.txt").is_file()
    assert [d["outcome"] for d in other.decisions()] == ["forced"]
    assert other.rollback() == ("c", "b")
    assert reg.champion() == "b"
    assert reg.rollback() == ("b", "a")
    d = ["--model-dir", registry_root]
    assert main(["models", "list", "--json", *d]) == 0
    listed = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(v["version"], v["champion"]) for v in listed] == [
        ("a", True),
        ("b", False),
        ("c", False),
    ]
    assert main(["models", "ab", "--stop", *d]) == 0
    assert reg.experiment() is None


def test_a_worker_on_an_s3_registry_hot_swaps(
    object_store: dict[str, str], settings_factory, worker_factory, monkeypatch
) -> None:
    for k, v in object_store.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", object_store["AWS_ENDPOINT"])
    root = f"s3://{BUCKET}/worker-models-{time.time_ns()}"
    save_worker_model(root, "lgbm-one")
    s = settings_factory(model_registry=root, model_poll_s=0.5)
    worker = worker_factory(s)
    assert orjson.loads(worker.get("/ready")[1])["model_version"] == "lgbm-one"
    save_worker_model(root, "lgbm-two")  # promoted from "another machine"
    deadline = time.monotonic() + 15
    while orjson.loads(worker.get("/ready")[1])["model_version"] != "lgbm-two":
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.2)
