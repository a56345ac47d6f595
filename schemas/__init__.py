"""The wire contract: JSON Schema files for events in and scores out, and their validators.

The JSON files in this package are the source of truth; the Python constants below are
read from them so that the schema and the code can't drift apart.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, Literal

Source = Literal["web", "email", "crm", "social", "enrichment"]
# Order matters: the feature store numbers event kinds in this order (features/lua.py), so
# a new source goes at the end and the stored state of the others keeps its meaning.
SOURCES: tuple[Source, ...] = ("web", "email", "crm", "social", "enrichment")
MAX_EVENT_BYTES = 64 * 1024

FeatureValue = int | float | str | None
"""A feature's value in records, API bodies and model inputs (None: missing)."""


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema ``name``: ``event.web``, ``event.email``, ``event.crm``,
    ``event.social``, ``event.enrichment``, ``score``, ``alert`` or ``dlq`` (the files of
    this package; README.md in it maps them to topics)."""
    text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def event_types(source: Source) -> tuple[str, ...]:
    """The event types the schema allows for ``source``."""
    return tuple(load_schema(f"event.{source}")["properties"]["type"]["enum"])


EVENT_TYPES: dict[Source, tuple[str, ...]] = {s: event_types(s) for s in SOURCES}
