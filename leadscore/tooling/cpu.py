"""CPU time (and memory) of the processes in a benchmark run and of the whole machine.

On a small machine the worker, the broker, Redis and the load generator share the same
cores, so a rate or a latency figure says little without knowing who had the CPU while it
was measured. ``CpuMeter`` gives, per named process and for the machine, the share of one
core used over an interval (100 = one core busy the whole time).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping

import psutil

from leadscore.tooling.exceptions import MeterNotStartedError

Target = int | tuple[int, int]
"""A process id, or ``(process id, thread id)`` for one thread of it."""


def process_cpu_seconds(target: Target) -> float:
    """User plus system CPU time of a process or one of its threads so far (NaN when it
    can't be read)."""
    with contextlib.suppress(psutil.Error, OSError):
        if isinstance(target, int):
            times = psutil.Process(target).cpu_times()
            return float(times.user + times.system)
        pid, tid = target
        for thread in psutil.Process(pid).threads():
            if thread.id == tid:
                return float(thread.user_time + thread.system_time)
    return float("nan")


def machine_cpu_seconds() -> dict[str, float]:
    """CPU time of all cores so far: ``busy`` (user, nice, system, irq, softirq) and ``steal``
    (time the hypervisor gave this machine's cores to someone else); empty when unreadable."""
    with contextlib.suppress(psutil.Error, OSError, AttributeError):
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + t.irq + t.softirq
        return {"busy": float(busy), "steal": float(t.steal)}
    return {}


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (NaN when it can't be read)."""
    with contextlib.suppress(psutil.Error, OSError):
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    return float("nan")


class CpuMeter:
    """CPU shares over an interval: ``start()``, then ``read()`` (each may be called again).

    ``pids`` names the processes (or threads) to follow; ``machine`` and ``steal`` are the whole
    machine's busy and stolen time, summed over its cores, so on 2 cores they go up to 200.
    ``sample`` and ``clock`` are the sources, replaceable in tests.
    """

    def __init__(
        self,
        pids: Mapping[str, Target],
        *,
        sample: Callable[[Mapping[str, Target]], dict[str, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pids = dict(pids)
        self._sample = sample or _sample
        self._clock = clock
        self._t0: float | None = None
        self._s0: dict[str, float] = {}
        self.used: dict[str, float] = {}
        """The CPU seconds behind the last ``read()``, per name."""

    def start(self) -> None:
        self._t0, self._s0 = self._clock(), self._sample(self._pids)

    def seconds(self) -> dict[str, float]:
        """CPU seconds used since ``start()``, per name (names that couldn't be read left out)."""
        now = self._sample(self._pids)
        return {
            k: v - self._s0[k]
            for k, v in now.items()
            if k in self._s0 and v == v and self._s0[k] == self._s0[k]  # neither is NaN
        }

    def read(self) -> dict[str, float]:
        """Percent of one core per name since ``start()``, and ``cores`` (the machine's count).

        Raises
        ------
        RuntimeError
            When called before ``start()``.
        """
        if self._t0 is None:
            raise MeterNotStartedError("CpuMeter.read() before start()")
        wall = max(self._clock() - self._t0, 1e-9)
        self.used = self.seconds()
        out = {k: round(100.0 * v / wall, 1) for k, v in self.used.items()}
        out["cores"] = float(os.cpu_count() or 1)
        return out


def _sample(pids: Mapping[str, Target]) -> dict[str, float]:
    out = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    machine = machine_cpu_seconds()
    if machine:
        out["machine"] = machine["busy"]
        out["steal"] = machine["steal"]
    return out
