"""The model registry: immutable versions, champion pointer, list/show."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.exceptions import ModelNotFoundError, RegistryError
from model.registry import CHAMPION_FILE, Registry


def writer(tag: str):
    def write(d: Path) -> None:
        (d / "model.txt").write_text(tag)
        (d / "meta.json").write_text(f'{{"version": "{tag}", "created_at": "{tag}"}}')

    return write


def test_saving_the_same_version_twice_errors_and_keeps_the_first(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.save("v1", writer("v1"))
    with pytest.raises(RegistryError, match="already exists"):
        reg.save("v1", writer("other"))
    assert (tmp_path / "v1" / "model.txt").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    with pytest.raises(RegistryError, match="needs model.txt"):
        reg.save("v1", lambda d: None)
    assert list(tmp_path.iterdir()) == []


def test_promote_list_and_show(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    assert reg.champion() is None and reg.list() == []
    reg.save("v1", writer("2026-01-01"), promote=True)
    reg.save("v2", writer("2026-01-02"))
    assert reg.champion() == "v1"
    reg.promote("v2")
    assert reg.champion() == "v2"
    listed = reg.list()
    assert [v.version for v in listed] == ["v1", "v2"]
    assert [v.champion for v in listed] == [False, True]
    assert reg.meta("v2")["version"] == "2026-01-02"


def test_promoting_an_unknown_version_keeps_the_champion(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.save("v1", writer("a"), promote=True)
    with pytest.raises(ModelNotFoundError):
        reg.promote("nope")
    with pytest.raises(ModelNotFoundError):
        reg.meta("nope")
    assert reg.champion() == "v1"


def test_champion_pointer_is_replaced_atomically(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.save("v1", writer("a"), promote=True)
    before = (tmp_path / CHAMPION_FILE).stat().st_ino
    reg.save("v2", writer("b"), promote=True)
    # os.replace swaps in a new file (new inode): readers see the old or the new id, never
    # a truncated one; no temporary files are left behind.
    assert (tmp_path / CHAMPION_FILE).stat().st_ino != before
    assert (tmp_path / CHAMPION_FILE).read_text() == "v2\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".champion")]


def test_invalid_version_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        Registry(tmp_path).path("../x")
