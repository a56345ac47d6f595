"""Errors raised by the model package."""

from __future__ import annotations

from leadscore.errors import LeadscoreError


class ModelError(LeadscoreError):
    """Base class: raised for any failure inside the model package."""


class ModelNotFoundError(ModelError):
    """Raised when a model version (or the champion) asked for is not in the registry."""


class RegistryError(ModelError):
    """Raised when the registry directory is unusable (unwritable, corrupt metadata, clash)."""


class TrainingError(ModelError):
    """Raised when a model can't be trained from the given data (too few rows, one class, ...)."""


class DataError(ModelError):
    """Raised when an input table can't be read or lacks what is needed (e.g. the target column)."""


class RulesConfigError(ModelError):
    """Raised when a rule file is malformed (unknown operator, missing keys)."""


class ModelIntegrityError(ModelError):
    """Raised when a model version fails its checks: files that don't match their checksums,
    invalid ``meta.json``, or a model text LightGBM can't load (tried in a child process)."""
