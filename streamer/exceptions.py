"""Errors raised by the worker."""

from __future__ import annotations

from leadscore.errors import LeadscoreError


class WorkerError(LeadscoreError):
    """Base class: raised for failures of the streaming worker."""


class PublishError(WorkerError):
    """Raised when the broker refuses records of a batch: the batch is not acknowledged and
    the worker stops, so that its events are processed again after a restart."""


class PipelineError(WorkerError):
    """Raised when a part of the hot path breaks its contract (a store's reply of the wrong
    shape): a bug, which the batch's isolation turns into DLQ records."""


class InjectedFaultError(WorkerError):
    """Raised by the scoring agent when ``LEADSCORE_FAULT_INJECT=agent`` (tests only)."""


class UnsupportedFaustError(WorkerError):
    """Raised at import when faust-streaming or mode-streaming is not the version the fast
    path was verified on (it patches their private internals)."""
