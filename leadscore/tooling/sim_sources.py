"""The simulator's social and enrichment sources (``leads.social``, ``leads.enrichment``).

Each lead gets hidden traits of its own here, drawn from random streams the web, email and
CRM events don't use (so those keep their draws): whether an intent provider covers its
company, the company's technology stack, the research surges a provider sees (on review sites
and publishers, not on our site: they don't raise web activity), and the lead's disposition
towards the brand (advocate, detractor, neutral), which sets how often it engages on social
media and what its comments say.

With ``signal`` on (the default) some of these move the conversion odds (added to the daily
conversion logit by :meth:`Extra.logit`): a surge on a configured topic, an advocate's
goodwill (a detractor's the opposite), a marketing-automation stack; and the firmographics
are the company's true ones. With ``signal`` off (a control world) the traits still produce
the same kinds and volumes of events, but nothing about them reaches conversion and the
firmographics are drawn independently of the lead: the new sources then carry no information
about who converts.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

#: Conversion logit effects (with signal): a surge while it lasts, a disposition, a stack.
SURGE_EFFECT = 2.0
ADVOCATE_EFFECT = 1.2
DETRACTOR_EFFECT = -1.2
STACK_EFFECT = 1.0

#: Share of leads whose company an enrichment provider covers.
COVERED = 0.75
#: Share of covered companies with an intent surge in the history, and its length in days.
SURGING = 0.5
SURGE_DAYS = (14, 35)
#: Intent topics as providers spell them: the configured ones (features/definitions.py
#: INTENT_TOPICS), and topics a surge for our category never names.
TOPICS_CONFIGURED = (
    "Lead Scoring",
    "Marketing Automation",
    "CRM Software",
    "Sales Intelligence",
    "Revenue Operations",
)
TOPICS_OTHER = ("ERP", "Payroll Software", "Cloud Security", "Data Warehousing", "HR Tech")
#: Technologies a technographics provider reports: marketing-automation and CRM tools (the
#: stack that buys a lead scorer), others, and some outside the features' vocabulary.
STACK_TECH = ("Salesforce", "HubSpot", "Marketo", "Pardot")
OTHER_TECH = (
    "Segment",
    "Snowflake",
    "BigQuery",
    "Tableau",
    "Looker",
    "Zendesk",
    "Intercom",
    "Shopify",
    "SAP",
    "Stripe",
    "Slack",
    "Jira",
    "AWS",
)
_EMPLOYEES: dict[str, tuple[int, int]] = {
    "1-10": (1, 10),
    "11-50": (11, 50),
    "51-200": (51, 200),
    "201-500": (201, 500),
    "501-1000": (501, 1000),
    "1001-5000": (1001, 5000),
    "5000+": (5001, 80_000),
}
_NAICS: dict[str, str] = {
    "Software": "511210",
    "Financial Services": "522110",
    "Healthcare": "621111",
    "Manufacturing": "332710",
    "Retail": "452210",
    "Professional Services": "541611",
    "Media": "515120",
    "Telecommunications": "517311",
    "Education": "611310",
    "Government": "921190",
    "Logistics": "484121",
    "Non-profit": "813219",
}
_BANDS = ("<1M", "1M-10M", "10M-50M", "50M-250M", "250M-1B", "1B+")
_COMMENTS: dict[str, tuple[str, ...]] = {
    "positive": (
        "Great webinar, really useful for our team!",
        "Love this feature, exactly what we needed.",
        "Fantastic case study, thanks for sharing!",
        "Excellent product update, well done.",
        "This is brilliant, our sales team is happy.",
    ),
    "negative": (
        "Terrible onboarding, very disappointed.",
        "Support never answered, awful experience.",
        "Too expensive and buggy, not worth it.",
        "Worst release so far, everything broke.",
    ),
    "neutral": (
        "Which regions do you support?",
        "Is there an API for this?",
        "When is the next release planned?",
        "Does it work with our CRM?",
    ),
}
#: Social event types and their weights (a follow comes once, first).
_SOCIAL_TYPES = (("mention", 0.2), ("share", 0.2), ("reply", 0.2), ("comment", 0.4))
_PLATFORMS = ("linkedin", "x", "youtube")


@dataclass(slots=True)
class Extra:
    """A lead's hidden traits for the two sources, and what it already emitted."""

    covered: bool
    employees: int
    revenue_band: str
    naics: str
    techs: list[str]
    stack: bool
    surge: tuple[int, int, str] | None  # (from ms, until ms, provider topic)
    disposition: str  # advocate, detractor or neutral
    social_rate: float  # expected social events per day
    enrich_at: int  # when the provider first delivers firmographics and technographics
    followed: bool = False
    sent_profile: bool = False
    weekday: int = 0  # the provider's weekly delivery day
    signal: bool = True

    def logit(self, day_ms: int) -> float:
        """What these traits add to the lead's conversion logit on the day at ``day_ms``."""
        if not self.signal:
            return 0.0
        out = STACK_EFFECT if self.stack else 0.0
        if self.disposition == "advocate":
            out += ADVOCATE_EFFECT
        elif self.disposition == "detractor":
            out += DETRACTOR_EFFECT
        if self.surge is not None and self.surge[0] <= day_ms < self.surge[1]:
            out += SURGE_EFFECT
        return out


def draw_extra(
    rng: random.Random, profile: dict[str, str], created_ms: int, *, signal: bool
) -> Extra:
    """A new lead's traits; ``profile`` is its true CRM profile."""
    covered = rng.random() < COVERED
    size, industry = profile["company_size"], profile["industry"]
    if not signal:  # a control world: firmographics say nothing about the lead
        size = rng.choice(tuple(_EMPLOYEES))
        industry = rng.choice(tuple(_NAICS))
    lo, hi = _EMPLOYEES[size]
    employees = int(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    band_i = min(
        len(_BANDS) - 1, max(0, int(math.log10(max(employees, 1)) * 1.4 + rng.gauss(0, 0.5)))
    )
    stack = rng.random() < 0.3
    techs = [t for t in OTHER_TECH if rng.random() < 0.18]
    if stack:
        techs += rng.sample(STACK_TECH, rng.randint(1, 2))
    rng.shuffle(techs)
    surge = None
    if covered and rng.random() < SURGING:
        start = created_ms + int(rng.uniform(-10.0, 70.0) * DAY_MS)
        length = int(rng.uniform(*SURGE_DAYS) * DAY_MS)
        surge = (start, start + length, rng.choice(TOPICS_CONFIGURED))
    u = rng.random()
    disposition = "advocate" if u < 0.15 else "detractor" if u < 0.25 else "neutral"
    # Advocates and detractors speak up a few times a week; most leads rarely engage at all.
    rate = (0.2 if disposition != "neutral" else 0.02) * rng.lognormvariate(0.0, 0.4)
    return Extra(
        covered=covered,
        employees=employees,
        revenue_band=_BANDS[band_i],
        naics=_NAICS[industry],
        techs=techs,
        stack=stack,
        surge=surge,
        disposition=disposition,
        social_rate=rate,
        enrich_at=created_ms + int(rng.uniform(0.05, 3.0) * DAY_MS),
        weekday=rng.randrange(7),
        signal=signal,
    )


def expected_events(extra: Extra, created_ms: int, end_ms: int, active_until_ms: float) -> float:
    """Expected number of events :func:`day_events` emits for a lead over the history (the
    simulator's event budget counts them)."""
    until = min(end_ms, active_until_ms)
    days = max(0.0, (until - created_ms) / DAY_MS)
    n = extra.social_rate * days
    if extra.covered:
        n += 2.0 if extra.enrich_at < until else 0.0
        weeks = days / 7.0
        n += 0.25 * weeks
        if extra.surge is not None:
            lo, hi = max(extra.surge[0], created_ms), min(extra.surge[1], until)
            n += max(0.0, (hi - lo) / DAY_MS / 7.0)
    return n


def day_events(
    rng: random.Random, extra: Extra, day: int, after_ms: int
) -> list[tuple[int, str, str, dict[str, Any]]]:
    """The lead's social and enrichment events of ``day`` (after ``after_ms``), as
    ``(ts, source, type, attributes)``."""
    day_ms = day * DAY_MS
    day_end = day_ms + DAY_MS
    out: list[tuple[int, str, str, dict[str, Any]]] = []

    def at(lo_ms: int) -> int:
        lo = max(lo_ms, after_ms + 1)
        return lo + int(rng.random() * max(1, day_end - lo - 1))

    if extra.covered and not extra.sent_profile and extra.enrich_at < day_end:
        extra.sent_profile = True
        t = max(extra.enrich_at, after_ms + 1)
        firmo: dict[str, Any] = {
            "employees": extra.employees,
            "revenue_band": extra.revenue_band,
            "industry_code": extra.naics,
            "provider": "clearbit",
        }
        out.append((t, "enrichment", "firmographics", firmo))
        techs = {"technologies": list(extra.techs), "provider": "builtwith"}
        out.append((t + rng.randint(1000, 600_000), "enrichment", "technographics", techs))
    if extra.covered and day % 7 == extra.weekday:
        t = max(day_ms + 6 * HOUR_MS, after_ms + 1)
        if extra.surge is not None and extra.surge[0] <= day_ms < extra.surge[1]:
            score = round(rng.uniform(60.0, 100.0), 1)
            out.append(
                (
                    t,
                    "enrichment",
                    "intent",
                    {"topic": extra.surge[2], "score": score, "provider": "bombora"},
                )
            )
        if rng.random() < 0.25:
            topic = rng.choice(TOPICS_CONFIGURED + TOPICS_OTHER)
            score = round(rng.uniform(5.0, 59.0), 1)
            out.append(
                (
                    t + 1,
                    "enrichment",
                    "intent",
                    {"topic": topic, "score": score, "provider": "bombora"},
                )
            )
    n = poisson(rng, extra.social_rate)
    for _ in range(n):
        t = at(day_ms + 7 * HOUR_MS)
        if not extra.followed:
            extra.followed = True
            out.append((t, "social", "follow", {"platform": rng.choice(_PLATFORMS)}))
            continue
        etype = rng.choices([s[0] for s in _SOCIAL_TYPES], weights=[s[1] for s in _SOCIAL_TYPES])[0]
        attrs: dict[str, Any] = {"platform": rng.choice(_PLATFORMS)}
        if etype == "comment":
            attrs["text"] = rng.choice(_COMMENTS[_tone(rng, extra.disposition)])
        out.append((t, "social", etype, attrs))
    return out


def _tone(rng: random.Random, disposition: str) -> str:
    u = rng.random()
    if disposition == "advocate":
        return "positive" if u < 0.8 else "neutral"
    if disposition == "detractor":
        return "negative" if u < 0.8 else "neutral"
    return "neutral" if u < 0.7 else "positive" if u < 0.85 else "negative"


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw; Knuth's product method is fast for the small rates used here."""
    if lam <= 0.0:
        return 0
    if lam > 30.0:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit = math.exp(-lam)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
