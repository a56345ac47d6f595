"""House rules ruff can't check: no function in the package is over 80 lines, and the
Faust fast path refuses Faust versions it was not verified on."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import leadscore
from leadscore.streamer import faust_fastpath
from leadscore.streamer.exceptions import UnsupportedFaustError

MAX_LINES = 80


def package_files() -> list[Path]:
    """Every module of the package, through its links to the top-level folders."""
    root = Path(leadscore.__file__).parent
    return sorted(
        Path(d) / f
        for d, _dirs, files in os.walk(root, followlinks=True)
        for f in files
        if f.endswith(".py")
    )


def test_no_function_is_over_80_lines() -> None:
    files = package_files()
    assert any("streamer" in p.parts for p in files), "the linked folders were not walked"
    long = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1 if node.end_lineno else 0
                if lines > MAX_LINES:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_the_fast_path_refuses_unverified_faust_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    faust_fastpath.check_versions()  # the installed ones are the verified ones
    monkeypatch.setattr(faust_fastpath, "version", lambda dist: "0.99.0")
    with pytest.raises(UnsupportedFaustError, match="verified on"):
        faust_fastpath.check_versions()
