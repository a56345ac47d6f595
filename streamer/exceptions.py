"""Errors raised by the streamer package."""

from __future__ import annotations


class LeadscoreError(Exception):
    """Base class: raised for any failure the CLI reports to the user as one line."""


class ConfigError(LeadscoreError):
    """Raised when a setting is missing or invalid (names the LEADSCORE_* variable)."""


class ServiceStartError(LeadscoreError):
    """Raised when the embedded broker or Redis can't be started or doesn't become ready."""


class KafkaUnavailableError(LeadscoreError):
    """Raised when the Kafka bootstrap servers don't answer in time."""


class PublishError(LeadscoreError):
    """Raised when the broker refuses records of a batch: the batch is not acknowledged and
    the worker stops, so that its events are processed again after a restart."""


class InjectedFaultError(LeadscoreError):
    """Raised by the scoring agent when ``LEADSCORE_FAULT_INJECT=agent`` (tests only)."""
