"""The settings as the deployment files (compose, Kubernetes) see them: environment variables.

``Settings`` ignores a ``LEADSCORE_*`` variable that names no setting, so a misspelt one in a
deployment file would be dropped without a word; these helpers let the tests refuse it, and
read the settings a process started with exactly a file's variables would have."""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from leadscore.settings import Settings

PREFIX = "LEADSCORE_"
#: Every variable a setting reads.
VARIABLES = frozenset(PREFIX + name.upper() for name in Settings.model_fields)


def not_settings(names: Iterable[str]) -> list[str]:
    """The ``LEADSCORE_*`` names among ``names`` that no setting reads."""
    return sorted({n for n in names if n.startswith(PREFIX) and n not in VARIABLES})


def credentials() -> frozenset[str]:
    """The variables that carry credentials: every ``SecretStr`` setting, and the API keys
    (their hashes let nobody in, but they name and scope every client)."""
    secret = {
        PREFIX + name.upper()
        for name, field in Settings.model_fields.items()
        if field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)
    }
    return frozenset(secret | {PREFIX + "API_KEYS"})


class _FromArguments(Settings):
    """Settings from the constructor's arguments only: not from this process's environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        *_others: Any,
        **_named: Any,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def settings_from(env: Mapping[str, str]) -> Settings:
    """The settings of a process whose environment is ``env`` (the test's own left out)."""
    assert not not_settings(env), not_settings(env)
    values = {name[len(PREFIX) :].lower(): v for name, v in env.items() if name in VARIABLES}
    return _FromArguments.model_validate(values)
