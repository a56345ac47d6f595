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
