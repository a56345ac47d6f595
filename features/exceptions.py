"""Errors raised by the features package."""

from __future__ import annotations

from leadscore.errors import LeadscoreError


class FeatureError(LeadscoreError):
    """Base class: raised for any failure inside the features package."""


class FeatureStoreUnavailableError(FeatureError):
    """Raised when Redis can't be reached or answers with an error the store can't handle."""


class EventFileError(FeatureError):
    """Raised when an event history file can't be read (missing, unreadable, wrong format)."""


class FeatureStateLostError(FeatureError):
    """Raised when Redis no longer holds the store's state (restarted empty, flushed, swapped,
    or a rebuild started): nothing may be scored until ``leadscore rebuild`` has run."""


class StateLayoutError(FeatureStateLostError):
    """Raised when Redis holds feature state of a layout this release doesn't write (another
    leadscore release wrote it): the worker refuses it rather than mix two layouts."""
