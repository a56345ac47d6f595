"""Errors raised by the tooling room."""

from __future__ import annotations

from leadscore.errors import LeadscoreError


class ToolingError(LeadscoreError):
    """Base class: raised for failures of the simulator, benchmark, demo or embedded services."""


class SimulationConfigError(ToolingError, ValueError):
    """Raised when a simulation is asked for impossible sizes (no leads, negative events)."""


class BenchConfigError(ToolingError, ValueError):
    """Raised when a benchmark is asked for traffic it can't make (an unknown source, or
    sources the simulated template has no events of)."""


class MeterNotStartedError(ToolingError, RuntimeError):
    """Raised when a CPU meter is read before it was started (a bug in the caller)."""


class ServiceStartError(ToolingError):
    """Raised when the embedded broker or Redis can't be started or doesn't become ready."""
