"""The feature store's wire format: how the Lua script and Python talk (one owner).

A script call returns one string per call: each event's result, separated by
:data:`RESULT_SEP`. A result starts with a reply code (:data:`REPLY_CODES`); ``F`` and ``R``
are followed by the lead's feature vector, its fields in spec order separated by
:data:`VECTOR_SEP` (empty for a missing value); ``E`` by an error message.

Both separators are ASCII control characters, so profile values, the only free text in a
vector, have their control characters replaced (:func:`scrub`): one inside a value would
shift every field after it and fail the whole batch.

>>> from leadscore.features.definitions import Count, Decayed, Rate
>>> specs = (Count("a", "web:page_view", "1h"), Rate("b", "a", "a"), Decayed("c"))
>>> parse_vector("3" + VECTOR_SEP + "" + VECTOR_SEP + "2.5", specs)
{'a': 3, 'b': None, 'c': 2.5}
>>> scrub("soft\\x1fware")
'soft ware'
"""

from __future__ import annotations

import math
from typing import Literal

from leadscore.features.definitions import (
    OPT_OUT_FIELD,
    PROFILE_EVENT_TYPES,
    PROFILE_FIELDS,
    SPECS,
    Count,
    Flag,
    Number,
    Profile,
    Spec,
    technology_bits,
)
from leadscore.schemas import FeatureValue
from leadscore.schemas.validation import Event

VECTOR_SEP = "\x1f"
"""Separates the fields of a feature vector (ASCII unit separator)."""
RESULT_SEP = "\x1e"
"""Separates the results of one script call (ASCII record separator)."""

ReplyCode = Literal["F", "R", "D", "L", "E"]
REPLY_CODES: dict[ReplyCode, str] = {
    "F": "applied: the features after the event follow",
    "R": "applied before, score not confirmed: the features it had follow (redelivery)",
    "D": "duplicate: applied and confirmed before, nothing changed",
    "L": "late: older than the retention before the lead's latest event",
    "E": "this event failed alone in the script: the error message follows",
}
STATE_LOST_REPLY = "LEADSCORE_STATE_LOST"
"""Prefix of the error reply of a call whose state marker doesn't match (features.state)."""
STATE_LAYOUT_REPLY = "LEADSCORE_STATE_LAYOUT"
"""Prefix of the error reply of a call whose generation is of another state layout."""

_CONTROL = str.maketrans({c: " " for c in [*range(0x20), 0x7F]})


def scrub(text: str) -> str:
    """``text`` with its ASCII control characters replaced by spaces."""
    return text.translate(_CONTROL)


def profile_updates(event: Event) -> dict[str, str | None]:
    """The stamped attributes a CRM or enrichment event sets, as the script receives them:
    strings (None clears one), scrubbed of control characters; numbers as their canonical
    text, which both the script and the offline replay return as is.

    >>> from leadscore.schemas.validation import Event
    >>> ev = Event("e1", "L1", "enrichment", "firmographics", "1970-01-01T00:00:00Z", 0,
    ...            {"employees": 250, "industry_code": "541511"})
    >>> profile_updates(ev)
    {'employees': '250', 'industry_sector': '54'}
    """
    if event.source == "enrichment":
        return _enrichment_updates(event)
    if event.source != "crm" or event.type not in PROFILE_EVENT_TYPES:
        return {}
    out: dict[str, str | None] = {}
    attrs = event.attributes
    for attr in PROFILE_FIELDS:
        if attr in attrs:
            v = attrs[attr]
            out[attr] = None if v is None else scrub(str(v))
    if OPT_OUT_FIELD in attrs:
        out[OPT_OUT_FIELD] = "1" if opted_out(attrs[OPT_OUT_FIELD]) else None
    return out


def _enrichment_updates(event: Event) -> dict[str, str | None]:
    attrs = event.attributes
    out: dict[str, str | None] = {}
    if event.type == "firmographics":
        if "employees" in attrs:
            n = attrs["employees"]
            out["employees"] = str(int(n)) if isinstance(n, int | float) else None
        if "revenue_band" in attrs:
            band = attrs["revenue_band"]
            out["revenue_band"] = None if band is None else scrub(str(band))
        if "industry_code" in attrs:
            code = attrs["industry_code"]
            out["industry_sector"] = None if code is None else scrub(str(code))[:2]
    elif event.type == "technographics":
        bits, n = technology_bits(attrs.get("technologies") or ())
        out["tech"], out["tech_count"] = bits, str(n)
    return out


def opted_out(value: object) -> bool:
    """Whether an ``opt_out`` attribute's value sets the opt-out (true, "true", "yes", 1);
    anything else (false, null, "no", 0) lifts it.

    >>> [opted_out(v) for v in (True, "Yes", 1, False, None, "no", 0)]
    [True, True, True, False, False, False, False]
    """
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1", "y")
    return value is True or (isinstance(value, int | float) and value == 1)


def parse_value(raw: str, spec: Spec) -> FeatureValue:
    """One field of a vector as its Python value."""
    if raw == "":
        return None
    if isinstance(spec, Count | Flag):
        return int(raw)
    if isinstance(spec, Profile):
        return raw
    if isinstance(spec, Number):
        return float(raw)
    value = float(raw)
    return value if math.isfinite(value) else None


def parse_vector(raw: str, specs: tuple[Spec, ...] = SPECS) -> dict[str, FeatureValue]:
    """The feature dict a vector encodes."""
    parts = raw.split(VECTOR_SEP)
    return {s.name: parse_value(v, s) for s, v in zip(specs, parts, strict=True)}


def lua_constants() -> str:
    """The separators as Lua source, for the script's generated header."""
    return (
        f"local SEP = '\\{ord(VECTOR_SEP)}'\n"
        f"local RESULT_SEP = '\\{ord(RESULT_SEP)}'\n"
        f"local STATE_LOST_REPLY = '{STATE_LOST_REPLY}'\n"
        f"local STATE_LAYOUT_REPLY = '{STATE_LAYOUT_REPLY}'"
    )
