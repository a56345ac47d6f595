"""Checks a model version must pass before a worker loads it.

A model file cut short (a full disk, a copy interrupted, a hand edit) makes LightGBM's
native parser read past the end of its buffer: the process dies (SIGSEGV, or a C++ abort)
and what it logs holds unrelated process memory. So, before LightGBM sees a model text:

1. the files must match the checksums written when the version was saved (``SHA256SUMS``,
   in ``sha256sum`` format, covering every file of the version);
2. ``meta.json`` must be valid against a typed model (:class:`MetaModel`);
3. the worker loads the booster in a child process first (``check_in_child``): whatever
   happens there can't take the worker down, and its output is not echoed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from leadscore.model.exceptions import ModelIntegrityError

CHECKSUMS_FILE = "SHA256SUMS"
REQUIRED_FILES = ("model.txt", "meta.json")
#: A child's model check is given this long (a large ensemble loads in well under it).
CHILD_TIMEOUT_S = 120.0


class FeatureModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    kind: Literal["numeric", "categorical"]
    levels: list[str] = Field(default_factory=list)
    source_column: str | None = None


class CalibrationModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    method: Literal["isotonic", "platt", "none"]
    x: list[float] = Field(default_factory=list)
    y: list[float] = Field(default_factory=list)
    a: float = 1.0
    b: float = 0.0

    @field_validator("y")
    @classmethod
    def _same_length(cls, y: list[float], info: Any) -> list[float]:
        x = info.data.get("x")
        if x is not None and len(x) != len(y):
            raise ValueError(f"calibration x has {len(x)} points and y {len(y)}")
        return y


class ThresholdsModel(BaseModel):
    hot: float = Field(ge=0.0, le=1.0)
    warm: float = Field(ge=0.0, le=1.0)


class MetaModel(BaseModel):
    """What a worker needs of ``meta.json``; other keys are kept as they are."""

    model_config = ConfigDict(extra="allow")

    version: str = Field(min_length=1)
    features: list[FeatureModel] = Field(min_length=1)
    thresholds: ThresholdsModel
    calibration: CalibrationModel | None = None
    created_at: str = ""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(directory: Path) -> None:
    """Write ``SHA256SUMS`` for every regular file of a version directory."""
    lines = [
        f"{file_sha256(p)}  {p.name}\n"
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != CHECKSUMS_FILE
    ]
    (directory / CHECKSUMS_FILE).write_text("".join(lines), encoding="utf-8")


def read_checksums(directory: Path) -> dict[str, str] | None:
    """File name -> SHA-256 from ``SHA256SUMS``; None for a version saved without one."""
    try:
        text = (directory / CHECKSUMS_FILE).read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelIntegrityError(f"{directory / CHECKSUMS_FILE} is unreadable: {exc}") from exc
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or "/" in name:
            raise ModelIntegrityError(f"{directory / CHECKSUMS_FILE} line {n} is malformed")
        sums[name] = digest
    return sums


def verify_checksums(directory: Path, names: tuple[str, ...] = REQUIRED_FILES) -> bool:
    """Check ``names`` against ``SHA256SUMS``; False when the version has no checksums.

    Raises :class:`ModelIntegrityError` if a file is missing from the list or differs.
    """
    sums = read_checksums(directory)
    if sums is None:
        return False
    for name in names:
        if name not in sums:
            raise ModelIntegrityError(f"{directory / CHECKSUMS_FILE} has no checksum for {name}")
        try:
            actual = file_sha256(directory / name)
        except OSError as exc:
            raise ModelIntegrityError(f"can't read {directory / name}: {exc}") from exc
        if actual != sums[name]:
            raise ModelIntegrityError(
                f"{directory / name} does not match its checksum (changed or cut short "
                "since it was saved)"
            )
    return True


def read_meta(directory: Path) -> dict[str, Any]:
    """``meta.json`` parsed and validated; raises :class:`ModelIntegrityError` if it isn't."""
    path = directory / "meta.json"
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError as exc:
        raise ModelIntegrityError(f"{path} is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelIntegrityError(f"{path} is not valid JSON: {exc}") from exc
    try:
        MetaModel.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the document"
        raise ModelIntegrityError(f"{path}: {where}: {first['msg']}") from exc
    data: dict[str, Any] = raw
    return data


def check_in_child(directory: Path, n_features: int, timeout: float = CHILD_TIMEOUT_S) -> int:
    """Load ``model.txt`` with LightGBM in a child process and score one row there.

    Returns the number of trees. Raises :class:`ModelIntegrityError` if the child fails in
    any way (an exception, a crash, a timeout) or the booster has another feature count.
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    try:
        done = subprocess.run(  # noqa: S603 - this interpreter, a module of ours
            [sys.executable, "-P", "-m", __name__, str(directory / "model.txt")],
            capture_output=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelIntegrityError(
            f"loading {directory / 'model.txt'} took over {timeout:.0f} s in a child process"
        ) from exc
    if done.returncode != 0:
        how = (
            f"was killed by signal {-done.returncode}"
            if done.returncode < 0
            else f"exited with {done.returncode}"
        )
        last = _last_error_line(done.stderr)
        raise ModelIntegrityError(
            f"LightGBM could not load {directory / 'model.txt'}: a child process that tried "
            f"{how}{': ' + last if last else ''}"
        )
    try:
        info = json.loads(done.stdout.decode("utf-8").strip().splitlines()[-1])
        trees, features = int(info["trees"]), int(info["features"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ModelIntegrityError(f"the model check of {directory} gave no result") from exc
    if features != n_features:
        raise ModelIntegrityError(
            f"{directory / 'model.txt'} has {features} features, meta.json lists {n_features}"
        )
    return trees


def _last_error_line(stderr: bytes) -> str:
    """The child's last line that names a Python error, printable characters only (LightGBM's
    own messages about a broken file may carry bytes of unrelated memory)."""
    for line in reversed(stderr.decode("utf-8", "replace").splitlines()):
        if "Error" in line:
            clean = "".join(c for c in line if c.isprintable())
            return clean[:300]
    return ""


def _lightgbm_library() -> str:
    """Path of LightGBM's shared library, found without importing the package (which pulls
    in scikit-learn and pandas: seconds of start-up for a check that takes milliseconds)."""
    import importlib.util

    spec = importlib.util.find_spec("lightgbm")
    if spec is None or not spec.submodule_search_locations:
        raise ModelIntegrityError("LightGBM is not installed")
    base = Path(next(iter(spec.submodule_search_locations))) / "lib"
    for name in ("lib_lightgbm.so", "lib_lightgbm.dylib", "lib_lightgbm.dll"):
        if (base / name).exists():
            return str(base / name)
    raise ModelIntegrityError(f"LightGBM's library is not in {base}")


def _child_main(model_file: str) -> int:
    """Make the native calls the worker's load makes (``lightgbm.Booster(model_file=...)``,
    the model dump and text the tree compiler and the explainer read, one prediction)
    through LightGBM's C API."""
    import ctypes

    lib = ctypes.cdll.LoadLibrary(_lightgbm_library())
    lib.LGBM_GetLastError.restype = ctypes.c_char_p

    def call(rc: int) -> None:
        if rc:
            raise ModelIntegrityError(lib.LGBM_GetLastError().decode("utf-8", "replace"))

    def text(fn: Any, *args: Any) -> int:
        """Length of a string an API call writes (asked twice when the buffer is short)."""
        size, need = 1 << 16, ctypes.c_int64()
        while True:
            buf = ctypes.create_string_buffer(size)
            call(fn(*args, ctypes.c_int64(size), ctypes.byref(need), buf))
            if need.value <= size:
                return need.value
            size = need.value

    handle, iterations = ctypes.c_void_p(), ctypes.c_int()
    call(
        lib.LGBM_BoosterCreateFromModelfile(
            model_file.encode(), ctypes.byref(iterations), ctypes.byref(handle)
        )
    )
    n_classes, n_features, n_models = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    call(lib.LGBM_BoosterGetNumClasses(handle, ctypes.byref(n_classes)))
    call(lib.LGBM_BoosterGetNumFeature(handle, ctypes.byref(n_features)))
    call(lib.LGBM_BoosterNumberOfTotalModel(handle, ctypes.byref(n_models)))
    text(lib.LGBM_BoosterGetLoadedParam, handle)
    # start iteration 0, all iterations, C_API_FEATURE_IMPORTANCE_SPLIT = 0
    text(lib.LGBM_BoosterSaveModelToString, handle, 0, -1, 0)
    text(lib.LGBM_BoosterDumpModel, handle, 0, -1, 0)
    row = (ctypes.c_double * max(n_features.value, 1))()
    out_len, out = ctypes.c_int64(), (ctypes.c_double * max(n_classes.value, 1))()
    # C_API_DTYPE_FLOAT64 = 1, one row-major row, C_API_PREDICT_NORMAL = 0, all iterations
    call(
        lib.LGBM_BoosterPredictForMat(
            handle, row, 1, 1, n_features.value, 1, 0, 0, -1, b"", ctypes.byref(out_len), out
        )
    )
    lib.LGBM_BoosterFree(handle)
    print(json.dumps({"trees": n_models.value, "features": n_features.value}))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
