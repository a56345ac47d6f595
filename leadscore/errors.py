"""The root of every error leadscore raises, and the errors shared across its packages.

Each package has its own small hierarchy under :class:`LeadscoreError` (``features``,
``model``, ``streamer``, ``tooling``), so a caller (the CLI) can catch leadscore's errors
without catching everyone's.
"""

from __future__ import annotations


class LeadscoreError(Exception):
    """Base class: raised for any failure the CLI reports to the user as one line."""


class ConfigError(LeadscoreError):
    """Raised when a setting is missing or invalid (names the LEADSCORE_* variable)."""


class ServiceUnavailableError(LeadscoreError):
    """Raised when a service leadscore needs (Kafka, Redis) does not answer in time."""


class KafkaUnavailableError(ServiceUnavailableError):
    """Raised when the Kafka bootstrap servers don't answer in time."""
