"""Generates the Redis Lua script from the feature specs.

The script body (``store.lua``) is generic; the tables it runs on (event kinds, feature list,
bucket sizes, decay factors) are rendered here from :mod:`leadscore.features.definitions`.
"""

from __future__ import annotations

from importlib import resources

from leadscore.features.definitions import (
    BUCKET_MS,
    DAY_MS,
    DECAY_POOLS,
    DERIVED_KINDS,
    OPT_OUT_FIELD,
    RECENCY_FIELD,
    RETENTION_MS,
    STAMPED_FIELDS,
    Count,
    Decayed,
    Flag,
    Number,
    Profile,
    Rate,
    Recency,
    Spec,
    counted_kinds,
    decay_factors,
    kept_buckets,
    kind_groups,
)
from leadscore.features.state import STATE_LAYOUT
from leadscore.features.wire import lua_constants
from leadscore.schemas import EVENT_TYPES


def all_kinds() -> list[str]:
    """Every event kind, source by source in source order: the schema's ``source:type``, then
    the source's derived ones (so a new source, appended last, renumbers no stored kind)."""
    out: list[str] = []
    for src, types in EVENT_TYPES.items():
        out += [f"{src}:{t}" for t in types]
        out += [k for k in DERIVED_KINDS if k.split(":", 1)[0] == src]
    return out


def kind_codes() -> dict[str, str]:
    """Short, stable field prefixes per event kind (keeps Redis hash fields small)."""
    return {kind: f"k{i}" for i, kind in enumerate(all_kinds())}


def _lua_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _lua_float(x: float) -> str:
    # %.17g round-trips a double exactly through Lua's strtod.
    return format(x, ".17g")


# Long enough to outlast a worker restart and the redelivery that follows it.
PENDING_TTL_S = 86_400


def render_spec(specs: tuple[Spec, ...], ttl_s: int, layout: int = STATE_LAYOUT) -> str:
    codes = kind_codes()
    res_by_kind = counted_kinds(specs)
    keep = kept_buckets(specs)
    index = {s.name: i + 1 for i, s in enumerate(specs)}
    lines = [
        lua_constants(),
        f"local LAYOUT = {layout}",
        f"local RES_MS = {{ m = {BUCKET_MS['m']}, h = {BUCKET_MS['h']}, d = {BUCKET_MS['d']} }}",
        f"local KEEP = {{ m = {keep['m']}, h = {keep['h']}, d = {keep['d']} }}",
        f"local DAY_MS = {DAY_MS}",
        f"local RETENTION_MS = {RETENTION_MS}",
        f"local TTL_S = {ttl_s}",
        f"local PENDING_TTL_S = {min(ttl_s, PENDING_TTL_S)}",
        "local PROFILE = { " + ", ".join(_lua_str(p) for p in STAMPED_FIELDS) + " }",
        f"local OPT_OUT = {_lua_str(OPT_OUT_FIELD)}",
        "local KINDS = {",
    ]
    for kind in all_kinds():
        res = ", ".join(_lua_str(r) for r in res_by_kind.get(kind, ()))
        groups = ", ".join(_lua_str(g) for g in kind_groups(kind))
        pts = ", ".join(
            f"{{ {_lua_str(pool)}, {points[kind]} }}"
            for pool, points in DECAY_POOLS.items()
            if points.get(kind, 0) > 0
        )
        lines.append(
            f"  [{_lua_str(kind)}] = {{ code = {_lua_str(codes[kind])}, res = {{ {res} }}, "
            f"pts = {{ {pts} }}, groups = {{ {groups} }} }},"
        )
    lines.append("}")
    features: list[str] = []
    count_idx: list[str] = []
    by_code_res: dict[str, list[str]] = {}
    half_life = None
    for s in specs:
        i = index[s.name]
        if isinstance(s, Count):
            features.append("{ t = 'c' }")
            count_idx.append(str(i))
            for kind in s.kinds:
                key = codes[kind] + s.resolution
                by_code_res.setdefault(key, []).append(f"{{ {i}, {s.n_buckets} }}")
        elif isinstance(s, Rate):
            features.append(
                f"{{ t = 'rate', a = {index[s.numerator]}, b = {index[s.denominator]} }}"
            )
        elif isinstance(s, Recency):
            features.append(f"{{ t = 'rec', g = {_lua_str(RECENCY_FIELD[s.group])} }}")
        elif isinstance(s, Decayed):
            features.append(f"{{ t = 'dec', pool = {_lua_str(s.pool)} }}")
            half_life = s.half_life_days
        elif isinstance(s, Profile):
            features.append(f"{{ t = 'prof', a = {_lua_str(s.key)} }}")
        elif isinstance(s, Number):
            # Python sends the value as its canonical text (features/wire.py), so both
            # sides parse the very same digits.
            features.append(f"{{ t = 'prof', a = {_lua_str(s.attribute)} }}")
        elif isinstance(s, Flag):
            features.append(f"{{ t = 'flag', a = {_lua_str(s.attribute)}, k = {s.index + 1} }}")
    lines.append("local FEATURES = { " + ", ".join(features) + " }")
    lines.append("local POOLS = { " + ", ".join(_lua_str(p) for p in DECAY_POOLS) + " }")
    lines.append("local COUNT_FEATURES = { " + ", ".join(count_idx) + " }")
    lines.append("local BY_CODE_RES = {")
    for key, targets in by_code_res.items():
        lines.append(f"  [{_lua_str(key)}] = {{ {', '.join(targets)} }},")
    lines.append("}")
    factors = decay_factors(half_life or 1.0, keep["d"])
    lines.append(
        "local DECAY = { [0] = "
        + ", ".join(_lua_float(f) for f in factors[:1])
        + (", " + ", ".join(_lua_float(f) for f in factors[1:]) if len(factors) > 1 else "")
        + " }"
    )
    return "\n".join(lines)


def render_script(specs: tuple[Spec, ...], ttl_s: int, layout: int = STATE_LAYOUT) -> str:
    """The complete Lua source for ``specs``; keys expire ``ttl_s`` after their last update.
    ``layout`` is the state layout it writes (tests render others to play another release)."""
    body = (
        resources.files(__package__ or "leadscore.features")
        .joinpath("store.lua")
        .read_text(encoding="utf-8")
    )
    return body.replace("--@SPEC@", render_spec(specs, ttl_s, layout), 1)
