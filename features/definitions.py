"""Declarative feature specs: the single place where every behavioural feature is defined.

Time is event time. A count over a window ``W`` at resolution ``r`` (bucket size ``b``) is the
number of events whose bucket ``floor(ts / b)`` lies in ``(floor(ref / b) - W/b, floor(ref / b)]``,
where ``ref`` is the reference moment (the lead's latest event time, or a chosen ``at``).
Windows are therefore aligned to bucket boundaries; that is what lets Redis keep a few
time-bucketed counters per lead instead of one entry per event, and lets the offline replay
reproduce the online numbers exactly.

Examples
--------
>>> FEATURE_NAMES[:2]
('web_page_views_1h', 'web_page_views_24h')
>>> by_name("web_pricing_views_7d").window
'7d'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Resolution = Literal["m", "h", "d"]
BUCKET_MS: dict[Resolution, int] = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
DAY_MS = 86_400_000
WINDOW_MS: dict[str, int] = {
    "1h": 3_600_000,
    "24h": 86_400_000,
    "7d": 7 * DAY_MS,
    "30d": 30 * DAY_MS,
}
# The resolution used for each window: fine enough to be meaningful, coarse enough to keep
# at most a few dozen buckets per counter.
WINDOW_RESOLUTION: dict[str, Resolution] = {"1h": "m", "24h": "h", "7d": "h", "30d": "d"}
RETENTION_MS = 30 * DAY_MS
"""Events older than this relative to a lead's latest event are late: counted and ignored."""

# Event kinds that count as the lead's own activity (email_sent/bounce are ours, not theirs).
ACTIVITY_KINDS = frozenset(
    {
        "web:page_view",
        "web:pricing_view",
        "web:form_submit",
        "web:content_download",
        "web:demo_request",
        "email:email_open",
        "email:email_click",
        "email:email_unsubscribe",
    }
)
EMAIL_ENGAGEMENT_KINDS = frozenset({"email:email_open", "email:email_click"})

# Points per event kind for the decayed engagement score (integers, so the per-day sums are exact).
ENGAGEMENT_POINTS: dict[str, int] = {
    "web:page_view": 1,
    "web:pricing_view": 5,
    "web:content_download": 4,
    "web:form_submit": 8,
    "web:demo_request": 15,
    "email:email_open": 1,
    "email:email_click": 3,
}
DEFAULT_HALF_LIFE_DAYS = 7.0

RecencyGroup = Literal["web", "email", "activity", "created"]
#: The field of a lead's state that holds each recency group's timestamp (short: it is
#: stored per lead).
RECENCY_FIELD: dict[RecencyGroup, str] = {
    "web": "lw",
    "email": "le",
    "activity": "la",
    "created": "cr",
}


def kind_groups(kind: str) -> list[str]:
    """The recency fields an event of ``kind`` (``source:type``) updates.

    >>> kind_groups("email:email_click")
    ['le', 'la']
    """
    groups = []
    if kind.startswith("web:"):
        groups.append(RECENCY_FIELD["web"])
    if kind in EMAIL_ENGAGEMENT_KINDS:
        groups.append(RECENCY_FIELD["email"])
    if kind in ACTIVITY_KINDS:
        groups.append(RECENCY_FIELD["activity"])
    if kind == "crm:lead_created":
        groups.append(RECENCY_FIELD["created"])
    return groups


#: CRM event types that carry profile attributes.
PROFILE_EVENT_TYPES = frozenset({"lead_created", "lead_updated"})
#: The CRM attribute that opts a lead out of scoring (CCPA "do not sell or share", a GDPR
#: objection): true stops the lead's score records until an event with it false (or null)
#: lifts it; the newer event by event time wins, as for profile attributes. Not a feature.
OPT_OUT_FIELD = "opt_out"
PROFILE_FIELDS: tuple[str, ...] = (
    "company_size",
    "industry",
    "job_title",
    "country",
    "lead_source",
)


@dataclass(frozen=True, slots=True)
class Count:
    """Number of events of ``kind`` (``source:type``) in ``window``."""

    name: str
    kind: str
    window: str

    @property
    def resolution(self) -> Resolution:
        return WINDOW_RESOLUTION[self.window]

    @property
    def n_buckets(self) -> int:
        return WINDOW_MS[self.window] // BUCKET_MS[self.resolution]


@dataclass(frozen=True, slots=True)
class Rate:
    """``numerator / denominator`` of two counts; missing when the denominator is zero."""

    name: str
    numerator: str
    denominator: str


@dataclass(frozen=True, slots=True)
class Recency:
    """Days from the last event of a group (web, email, activity, created) to ref."""

    name: str
    group: RecencyGroup


@dataclass(frozen=True, slots=True)
class Decayed:
    """Sum of engagement points per day, each day weighted by ``0.5 ** (age_days / half_life)``."""

    name: str
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS


@dataclass(frozen=True, slots=True)
class Profile:
    """Latest value of a CRM profile attribute (newest ``ts`` wins, ties by ``event_id``)."""

    name: str
    attribute: str = field(default="")

    @property
    def key(self) -> str:
        return self.attribute or self.name


Spec = Count | Rate | Recency | Decayed | Profile


def _count(source: str, what: str, event_type: str, windows: tuple[str, ...]) -> list[Count]:
    return [Count(f"{source}_{what}_{w}", f"{source}:{event_type}", w) for w in windows]


def build_specs(half_life_days: float = DEFAULT_HALF_LIFE_DAYS) -> tuple[Spec, ...]:
    """The full, ordered feature set. The order is the model's column order."""
    specs: list[Spec] = [
        *_count("web", "page_views", "page_view", ("1h", "24h", "7d", "30d")),
        *_count("web", "pricing_views", "pricing_view", ("24h", "7d", "30d")),
        *_count("web", "form_submits", "form_submit", ("7d", "30d")),
        *_count("web", "content_downloads", "content_download", ("7d", "30d")),
        *_count("web", "demo_requests", "demo_request", ("30d",)),
        *_count("email", "sent", "email_sent", ("7d", "30d")),
        *_count("email", "opens", "email_open", ("24h", "7d", "30d")),
        *_count("email", "clicks", "email_click", ("24h", "7d", "30d")),
        *_count("email", "unsubscribes", "email_unsubscribe", ("30d",)),
        *_count("email", "bounces", "email_bounce", ("30d",)),
        Rate("email_open_rate_30d", "email_opens_30d", "email_sent_30d"),
        Rate("email_click_rate_30d", "email_clicks_30d", "email_sent_30d"),
        Recency("days_since_last_web", "web"),
        Recency("days_since_last_email", "email"),
        Recency("days_since_last_activity", "activity"),
        Recency("days_since_created", "created"),
        Decayed("engagement_decayed", half_life_days),
        *[Profile(f) for f in PROFILE_FIELDS],
    ]
    return tuple(specs)


SPECS: tuple[Spec, ...] = build_specs()
FEATURE_NAMES: tuple[str, ...] = tuple(s.name for s in SPECS)
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(s.name for s in SPECS if isinstance(s, Profile))
NUMERIC_FEATURES: tuple[str, ...] = tuple(s.name for s in SPECS if not isinstance(s, Profile))


def feature_set_id(specs: tuple[Spec, ...] = SPECS) -> str:
    """A short id of a feature set (names and kinds, in order): models record the one they
    were trained on, so a reader can tell two models' inputs apart at a glance."""
    import hashlib

    text = "\n".join(
        f"{s.name}:{'categorical' if isinstance(s, Profile) else 'numeric'}" for s in specs
    )
    return "events-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def by_name(name: str, specs: tuple[Spec, ...] = SPECS) -> Spec:
    """The spec called ``name``; raises KeyError if there is none."""
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(name)


def counted_kinds(specs: tuple[Spec, ...] = SPECS) -> dict[str, tuple[Resolution, ...]]:
    """For each event kind, the bucket resolutions some feature needs (day always, for decay)."""
    out: dict[str, set[Resolution]] = {}
    for s in specs:
        if isinstance(s, Count):
            out.setdefault(s.kind, set()).add(s.resolution)
    order: tuple[Resolution, ...] = ("m", "h", "d")
    return {k: tuple(r for r in order if r in v) for k, v in sorted(out.items())}


def kept_buckets(specs: tuple[Spec, ...] = SPECS) -> dict[Resolution, int]:
    """How many buckets of each resolution must be kept to answer every window."""
    keep: dict[Resolution, int] = {"m": 0, "h": 0, "d": RETENTION_MS // DAY_MS}
    for s in specs:
        if isinstance(s, Count):
            keep[s.resolution] = max(keep[s.resolution], s.n_buckets)
    return keep


def decay_factors(half_life_days: float, n_days: int) -> list[float]:
    """``0.5 ** (k / half_life)`` for ``k`` in ``0..n_days-1``.

    Computed once in Python and shipped to Lua as exact decimal literals, so both sides
    multiply by the very same doubles (no reliance on two libm ``pow`` implementations).
    """
    return [0.5 ** (k / half_life_days) for k in range(n_days)]
