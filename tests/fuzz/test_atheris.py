"""A bounded coverage-guided run of ``fuzz_validator.py`` (12 s; ``LEADSCORE_FUZZ_SECONDS``
changes it). The harness's coverage stops growing long before that (docs/performance.md,
Fuzzing): the suite's run shows the validator survives the harness, and long campaigns, for
what only many more inputs find, run the script directly (see its docstring) with their
results in docs/performance.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fuzz

HARNESS = Path(__file__).with_name("fuzz_validator.py")


def test_validator_survives_coverage_guided_fuzzing(tmp_path: Path) -> None:
    seconds = int(os.environ.get("LEADSCORE_FUZZ_SECONDS", "12"))
    done = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            f"-max_total_time={seconds}",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=seconds + 120,
        check=False,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "oom-")))
    assert done.returncode == 0 and not crashes, done.stderr[-3000:]
    runs = [
        line
        for line in done.stderr.splitlines()
        if line.startswith("stat::number_of_executed_units")
    ]
    assert runs and int(runs[0].split(":")[-1]) > 1000, done.stderr[-2000:]
