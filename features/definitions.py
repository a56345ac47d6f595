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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

from leadscore.schemas.privacy import normalize_name

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

#: A comment's sentiment (VADER's compound score, set at validation: schemas/sentiment.py)
#: splits it into one of three kinds, VADER's usual cut-offs: counting the positive and
#: negative ones is exact in Lua and Python alike, where a sum of floats would depend on
#: the order events arrive in.
POSITIVE_SENTIMENT = 0.05
NEGATIVE_SENTIMENT = -0.05
#: leads.enrichment intent: the research topics the features name, a bounded list (each
#: gets a windowed surge count; a topic outside it counts as ``other``). Editing it changes
#: the feature set: models trained before must be retrained. A provider's topic matches
#: case- and separator-insensitively (:func:`intent_topic`).
INTENT_TOPICS: tuple[str, ...] = (
    "lead_scoring",
    "marketing_automation",
    "crm_software",
    "sales_intelligence",
    "revenue_operations",
)
#: An intent score (0-100) at or above this is a surge (Bombora-style); below, a weak signal.
INTENT_SURGE_SCORE = 60.0
#: leads.enrichment technographics: the technologies the features name, a bounded multi-hot
#: encoding (one 0/1 feature each; ``tech_count`` counts every listed technology, these or
#: not). Same rule as the topics: editing it changes the feature set.
TECHNOLOGIES: tuple[str, ...] = (
    "salesforce",
    "hubspot",
    "marketo",
    "pardot",
    "segment",
    "snowflake",
    "bigquery",
    "tableau",
    "looker",
    "zendesk",
    "intercom",
    "shopify",
)
#: Event kinds that are not ``source:type`` of a schema but derived from an event's
#: attributes (:func:`event_kind`). In the store's kind codes each source's derived kinds
#: follow its schema's kinds (features/lua.py), so adding one to the last source, or a new
#: source, renumbers nothing.
SENTIMENT_KINDS: tuple[str, ...] = ("social:comment_positive", "social:comment_negative")
DERIVED_KINDS: tuple[str, ...] = (
    *SENTIMENT_KINDS,
    *(f"enrichment:intent_surge_{t}" for t in (*INTENT_TOPICS, "other")),
    "enrichment:intent_weak",
)
INTENT_SURGE_KINDS: tuple[str, ...] = tuple(
    k for k in DERIVED_KINDS if k.startswith("enrichment:intent_surge_")
)

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
#: Points per social kind for ``social_engagement_decayed``: a pool of its own, so a new
#: source adds features and changes none of the old ones.
SOCIAL_ENGAGEMENT_POINTS: dict[str, int] = {
    "social:follow": 2,
    "social:mention": 3,
    "social:share": 4,
    "social:reply": 3,
    "social:comment": 3,
    "social:comment_positive": 5,
    "social:comment_negative": 1,
}
#: Points per intent kind for ``intent_decayed``: a surge on any topic 3, a weak signal 1.
INTENT_POINTS: dict[str, int] = {
    **dict.fromkeys(INTENT_SURGE_KINDS, 3),
    "enrichment:intent_weak": 1,
}
#: Each decayed pool: its field in a lead's state and its points per kind.
DECAY_POOLS: dict[str, Mapping[str, int]] = {
    "e": ENGAGEMENT_POINTS,
    "es": SOCIAL_ENGAGEMENT_POINTS,
    "ei": INTENT_POINTS,
}
DEFAULT_HALF_LIFE_DAYS = 7.0

RecencyGroup = Literal["web", "email", "activity", "created", "social", "intent"]
#: The field of a lead's state that holds each recency group's timestamp (short: it is
#: stored per lead).
RECENCY_FIELD: dict[RecencyGroup, str] = {
    "web": "lw",
    "email": "le",
    "activity": "la",
    "created": "cr",
    "social": "ls",
    "intent": "li",
}


def event_kind(source: str, event_type: str, attributes: Mapping[str, Any]) -> str:
    """The kind the feature store counts an event as: ``source:type``, except a social
    comment, whose sentiment makes it positive, negative or neither.

    >>> event_kind("social", "comment", {"sentiment": 0.6696})
    'social:comment_positive'
    >>> event_kind("social", "comment", {}), event_kind("web", "page_view", {})
    ('social:comment', 'web:page_view')
    """
    if source == "social" and event_type == "comment":
        s = attributes.get("sentiment")
        if _is_number(s):
            if s >= POSITIVE_SENTIMENT:
                return "social:comment_positive"
            if s <= NEGATIVE_SENTIMENT:
                return "social:comment_negative"
    if source == "enrichment" and event_type == "intent":
        score = attributes.get("score")
        if _is_number(score) and score >= INTENT_SURGE_SCORE:
            return f"enrichment:intent_surge_{intent_topic(attributes.get('topic'))}"
        return "enrichment:intent_weak"
    return f"{source}:{event_type}"


def _is_number(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


#: Each configured topic by its normalised name (:func:`normalize_name`: case and
#: separators ignored, as PII attribute names are matched).
_TOPIC_BY_NAME: dict[str, str] = {normalize_name(t): t for t in INTENT_TOPICS}


def intent_topic(topic: Any) -> str:
    """The :data:`INTENT_TOPICS` entry a provider's topic names, else ``other``.

    >>> intent_topic("Marketing Automation"), intent_topic("lead-scoring"), intent_topic("ERP")
    ('marketing_automation', 'lead_scoring', 'other')
    """
    if isinstance(topic, str):
        return _TOPIC_BY_NAME.get(normalize_name(topic), "other")
    return "other"


def technology_bits(technologies: Any) -> tuple[str, int]:
    """A technographics list as the store keeps it: one ``0``/``1`` per :data:`TECHNOLOGIES`
    entry (matched case- and separator-insensitively), and how many distinct technologies
    the list names in all.

    >>> technology_bits(["HubSpot", "Snowflake", "SAP", "hubspot"])
    ('010001000000', 3)
    """
    names = {normalize_name(t) for t in technologies if isinstance(t, str)}
    names.discard("")
    return "".join("1" if t in names else "0" for t in TECHNOLOGIES), len(names)


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
    if kind.startswith("social:"):
        groups.append(RECENCY_FIELD["social"])
    if kind in INTENT_SURGE_KINDS:
        groups.append(RECENCY_FIELD["intent"])
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
#: The attributes an enrichment event sets in a lead's profile (features/wire.py
#: ``profile_updates`` derives them), stamped like the CRM's: the newer observation of each
#: wins by event time. ``tech`` is :func:`technology_bits`' string, one event's whole list.
ENRICHMENT_FIELDS: tuple[str, ...] = (
    "employees",
    "revenue_band",
    "industry_sector",
    "tech",
    "tech_count",
)
#: Every attribute the store keeps per lead with a stamp: the script's profile table.
STAMPED_FIELDS: tuple[str, ...] = (*PROFILE_FIELDS, *ENRICHMENT_FIELDS)


@dataclass(frozen=True, slots=True)
class Count:
    """Number of events of ``kind`` (``source:type``), and of the kinds in ``also``, in
    ``window``."""

    name: str
    kind: str
    window: str
    also: tuple[str, ...] = ()

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.kind, *self.also)

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
    """Sum of engagement points per day, each day weighted by ``0.5 ** (age_days / half_life)``.
    ``pool`` names the points per kind (:data:`DECAY_POOLS`); all pools share one half-life."""

    name: str
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS
    pool: str = "e"


@dataclass(frozen=True, slots=True)
class Profile:
    """Latest value of a CRM profile attribute (newest ``ts`` wins, ties by ``event_id``)."""

    name: str
    attribute: str = field(default="")

    @property
    def key(self) -> str:
        return self.attribute or self.name


@dataclass(frozen=True, slots=True)
class Number:
    """Latest numeric value of a stamped attribute (an enrichment's head count)."""

    name: str
    attribute: str


@dataclass(frozen=True, slots=True)
class Flag:
    """1 or 0: character ``index`` of a stamped attribute's bit string (the technographics
    multi-hot); missing until the attribute is first set."""

    name: str
    attribute: str
    index: int


Spec = Count | Rate | Recency | Decayed | Profile | Number | Flag


def _count(
    source: str, what: str, event_type: str, windows: tuple[str, ...], also: tuple[str, ...] = ()
) -> list[Count]:
    return [Count(f"{source}_{what}_{w}", f"{source}:{event_type}", w, also) for w in windows]


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
        # leads.social: after the others, so the columns of models trained before keep
        # their positions.
        *_count("social", "mentions", "mention", ("7d", "30d")),
        *_count("social", "replies", "reply", ("30d",)),
        *_count("social", "shares", "share", ("30d",)),
        *_count("social", "follows", "follow", ("30d",)),
        *_count("social", "comments", "comment", ("7d", "30d"), SENTIMENT_KINDS),
        *_count("social", "positive_comments", "comment_positive", ("30d",)),
        *_count("social", "negative_comments", "comment_negative", ("30d",)),
        Rate(
            "social_positive_comment_rate_30d",
            "social_positive_comments_30d",
            "social_comments_30d",
        ),
        Recency("days_since_last_social", "social"),
        Decayed("social_engagement_decayed", half_life_days, pool="es"),
        # leads.enrichment: firmographics and technographics are the latest observation of
        # each field; intent is windowed and decayed.
        Number("firmo_employees", "employees"),
        Profile("firmo_revenue_band", "revenue_band"),
        Profile("firmo_industry_sector", "industry_sector"),
        Number("tech_count", "tech_count"),
        *[Flag(f"tech_{t}", "tech", i) for i, t in enumerate(TECHNOLOGIES)],
        Count("intent_signals_30d", "enrichment:intent_weak", "30d", INTENT_SURGE_KINDS),
        Count("intent_surges_7d", INTENT_SURGE_KINDS[0], "7d", INTENT_SURGE_KINDS[1:]),
        Count("intent_surges_30d", INTENT_SURGE_KINDS[0], "30d", INTENT_SURGE_KINDS[1:]),
        *[
            Count(f"intent_{t}_surges_30d", f"enrichment:intent_surge_{t}", "30d")
            for t in INTENT_TOPICS
        ],
        Recency("days_since_last_intent_surge", "intent"),
        Decayed("intent_decayed", half_life_days, pool="ei"),
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


#: The sources whose events set each recency group.
_RECENCY_SOURCES: dict[RecencyGroup, frozenset[str]] = {
    "web": frozenset({"web"}),
    "email": frozenset({"email"}),
    "activity": frozenset({"web", "email"}),
    "created": frozenset({"crm"}),
    "social": frozenset({"social"}),
    "intent": frozenset({"enrichment"}),
}


def feature_sources(specs: tuple[Spec, ...] = SPECS) -> dict[str, frozenset[str]]:
    """For each feature, the sources whose events it reads (training can leave a source's
    features out, to measure what the source adds: ``leadscore train --compare-without``).

    >>> feature_sources()["email_open_rate_30d"], feature_sources()["tech_hubspot"]
    (frozenset({'email'}), frozenset({'enrichment'}))
    """

    def of_kinds(kinds: Any) -> frozenset[str]:
        return frozenset(k.split(":", 1)[0] for k in kinds)

    out: dict[str, frozenset[str]] = {}
    for s in specs:
        if isinstance(s, Count):
            out[s.name] = of_kinds(s.kinds)
        elif isinstance(s, Rate):
            out[s.name] = out[s.numerator] | out[s.denominator]
        elif isinstance(s, Recency):
            out[s.name] = _RECENCY_SOURCES[s.group]
        elif isinstance(s, Decayed):
            out[s.name] = of_kinds(DECAY_POOLS[s.pool])
        elif isinstance(s, Profile):
            out[s.name] = frozenset({"crm" if s.key in PROFILE_FIELDS else "enrichment"})
        else:
            out[s.name] = frozenset({"enrichment"})
    return out


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
            for kind in s.kinds:
                out.setdefault(kind, set()).add(s.resolution)
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
