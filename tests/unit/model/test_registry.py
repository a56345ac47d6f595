"""The model registry: immutable versions, champion pointer, list/show."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadscore.model.exceptions import ModelNotFoundError, RegistryError
from leadscore.model.registry import CHAMPION_FILE, Registry
from tests.fakes import writer


def test_saving_the_same_version_twice_errors_and_keeps_the_first(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.save("v1", writer("v1", "first"))
    first = (tmp_path / "v1" / "meta.json").read_text()
    with pytest.raises(RegistryError, match="already exists"):
        reg.save("v1", writer("v1", "other"))
    assert (tmp_path / "v1" / "meta.json").read_text() == first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    with pytest.raises(RegistryError, match="needs model.txt"):
        reg.save("v1", lambda d: None)
    assert list(tmp_path.iterdir()) == []


def test_promote_list_and_show(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    assert reg.champion() is None and reg.list() == []
    reg.save("v1", writer("v1", "2026-01-01"), promote=True)
    reg.save("v2", writer("v2", "2026-01-02"))
    assert reg.champion() == "v1"
    reg.promote("v2")
    assert reg.champion() == "v2"
    listed = reg.list()
    assert [v.version for v in listed] == ["v1", "v2"]
    assert [v.champion for v in listed] == [False, True]
    assert reg.meta("v2")["created_at"] == "2026-01-02"


def test_promoting_an_unknown_version_keeps_the_champion(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.save("v1", writer("v1"), promote=True)
    with pytest.raises(ModelNotFoundError):
        reg.promote("nope")
    with pytest.raises(ModelNotFoundError):
        reg.meta("nope")
    assert reg.champion() == "v1"


def test_champion_pointer_is_replaced_atomically(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.save("v1", writer("v1"), promote=True)
    before = (tmp_path / CHAMPION_FILE).stat().st_ino
    reg.save("v2", writer("v2"), promote=True)
    # os.replace swaps in a new file (new inode): readers see the old or the new id, never
    # a truncated one; no temporary files are left behind.
    assert (tmp_path / CHAMPION_FILE).stat().st_ino != before
    assert (tmp_path / CHAMPION_FILE).read_text() == "v2\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".champion")]


def test_invalid_version_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        Registry(tmp_path).path("../x")
