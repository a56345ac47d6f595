"""Registry versions for tests: valid tiny models, and the corruptions a disk or a hand edit
can make (used by the model-holder unit tests and the worker's integration test)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from leadscore.model.integrity import write_checksums


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
            "features": [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"}],
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
