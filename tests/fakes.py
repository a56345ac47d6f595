"""Fakes and fixtures' building blocks shared by the tests: registry versions (valid tiny
models, a worker model, the corruptions a disk or a hand edit can make) and a fake
producer send."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson

from leadscore.features.definitions import SPECS, Profile
from leadscore.model.integrity import write_checksums
from leadscore.model.registry import Registry
from leadscore.schemas.validation import format_ts_ms
from leadscore.streamer.pipeline import Message


def tiny_model_text() -> str:
    """A real LightGBM model (two features), small enough to train in milliseconds, large
    enough that its last percent is the parameters section LightGBM's loader parses."""
    import lightgbm as lgb
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    params = {"objective": "binary", "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=5)
    return str(booster.model_to_string())


def writer(version: str, created_at: str = ""):
    """Writes a valid version: a real model and a meta.json the checks accept."""

    def write(d: Path) -> None:
        (d / "model.txt").write_text(tiny_model_text())
        meta = {
            "version": version,
            "created_at": created_at,
            # Two features the worker computes (it refuses models over any others).
            "features": [
                {"name": "web_page_views_1h", "kind": "numeric"},
                {"name": "web_pricing_views_24h", "kind": "numeric"},
            ],
            "thresholds": {"hot": 0.7, "warm": 0.4},
        }
        (d / "meta.json").write_text(json.dumps(meta))

    return write


def truncate(fraction: float, *, resum: bool = False) -> Callable[[Path], None]:
    def corrupt(d: Path) -> None:
        text = (d / "model.txt").read_bytes()
        (d / "model.txt").write_bytes(text[: int(len(text) * fraction)])
        if resum:  # as if someone rewrote the checksums too: only LightGBM can tell now
            write_checksums(d)

    return corrupt


def meta(value: object) -> Callable[[Path], None]:
    def corrupt(d: Path) -> None:
        (d / "meta.json").write_text(json.dumps(value))
        write_checksums(d)

    return corrupt


def features_null(d: Path) -> None:
    m = json.loads((d / "meta.json").read_text())
    m["features"] = None
    (d / "meta.json").write_text(json.dumps(m))
    write_checksums(d)


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated-50": truncate(0.5),
    "truncated-99": truncate(0.99),
    "truncated-50-resummed": truncate(0.5, resum=True),
    "truncated-99-resummed": truncate(0.99, resum=True),
    "meta-list": meta([]),
    "meta-features-null": features_null,
}


def corrupted_copy(root: Path, good: str, version: str, corrupt: Callable[[Path], None]) -> None:
    """A copy of ``good`` named ``version``, then damaged as a disk or a hand edit would."""
    shutil.copytree(root / good, root / version)
    m = json.loads((root / version / "meta.json").read_text())
    m["version"] = version
    (root / version / "meta.json").write_text(json.dumps(m))
    write_checksums(root / version)
    corrupt(root / version)


def save_worker_model(model_dir: str | Path, version: str, *, promote: bool = True) -> Path:
    """Train a small booster on random rows of the worker's features and save it."""
    rng = np.random.default_rng(abs(hash(version)) % 2**32)
    n = len(SPECS)
    x = rng.random((400, n)) * 5
    y = (x[:, 0] + x[:, 5] + rng.normal(size=400) > 5).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 8}, lgb.Dataset(x, y), 20
    )
    features = [
        {"name": s.name, "kind": "categorical", "levels": ["saas", "retail", "DE", "US"]}
        if isinstance(s, Profile)
        else {"name": s.name, "kind": "numeric"}
        for s in SPECS
    ]
    meta = {
        "version": version,
        "kind": "lightgbm",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "features": features,
        "calibration": {"method": "none"},
        "thresholds": {"hot": 0.7, "warm": 0.4},
    }

    def write(d: Path) -> None:
        booster.save_model(str(d / "model.txt"))
        (d / "meta.json").write_text(json.dumps(meta), encoding="utf-8")

    return Registry(model_dir).save(version, write, promote=promote)


class FakeSend:
    """A producer's ``send``: records each record and 'delivers' it to the partition a fixed
    hash of its key gives, or fails it if its topic is in ``refuse``."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, bytes | None, int | None]] = []
        self.values: list[tuple[str, bytes]] = []
        self.refuse = refuse

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None
    ) -> asyncio.Future[Any]:
        self.calls.append((topic, key, partition))
        self.values.append((topic, value))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if topic in self.refuse:
            fut.set_exception(RuntimeError(f"the broker refused a record on {topic}"))
        else:
            chosen = partition if partition is not None else sum(key or b"") % 4
            fut.set_result(SimpleNamespace(partition=chosen))
        return fut


# The batch path's messages (tests/unit/streamer).
TOPICS = ("leads.scores", "leads.dlq", "leads.alerts")


def message(i: int, lead: str = "L-1", raw: bytes | None = None) -> Message:
    ev = {
        "event_id": f"e{i}",
        "lead_id": lead,
        "source": "web",
        "type": "pricing_view" if i % 2 else "page_view",
        "ts": format_ts_ms(int(time.time() * 1000) - 60_000 + i),
    }
    return Message("leads.web", 0, i, lead.encode(), raw or orjson.dumps(ev), time.time())


async def batches(*groups: Sequence[Message]) -> AsyncIterator[Sequence[Message]]:
    for g in groups:
        yield g
