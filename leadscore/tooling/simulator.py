"""Seeded synthetic B2B lead histories with a hidden ground-truth conversion process.

The generator drives ``leadscore simulate``, ``leadscore demo`` (first a history to train on,
then a live stream) and the tests. Everything is reproducible: one seed gives the same leads,
the same events, the same event ids.

How the world works (none of this is visible in the events, only its consequences):

* **Leads** arrive through the CRM (``lead_created``) with firmographics drawn from skewed,
  realistic distributions. A hidden *fit* sums moderate effects of job seniority, company size,
  industry, country and lead source, plus noise. Some fields are missing or stale at creation and
  are corrected later by ``lead_updated`` (enrichment).
* A hidden **intent** per lead is a baseline plus bursts that arrive at random (more often for
  good-fit, in-market leads) and decay exponentially with a lead-specific time constant. The
  creation itself is a burst whose size depends on the lead source.
* **Web sessions** happen at a rate proportional to intent (times a personal browsing habit,
  weekday and hour-of-day effects); within a session, pricing views, forms and demo requests
  become much likelier as intent rises, page views only a little. Some leads are
  *researchers* (students, consultants, competitors): lots of pages and downloads, no purchase.
* **Email** nurture campaigns go out in waves twice a week. Human opens and clicks depend on
  intent only mildly and on a personal habit a lot; a fifth of the leads sit behind privacy
  proxies that "open" every mail within seconds. So plain opens carry little signal.
* **Conversion** is a daily hazard driven by *current* intent and fit. A decision emits
  ``stage_changed`` (``opportunity``), then ``converted`` (or, for a minority, a lost deal as
  ``disqualified``) after a delay drawn from ``conversion_delay_days``. A separate hazard
  disqualifies poor-fit, researcher and long-silent leads. Closed leads stop almost all activity.

Because intent decays, *recent* behaviour and its trend predict conversion better than 30-day
totals or static rules, which is what the model is supposed to discover.

Examples
--------
>>> evs = simulate(SimConfig(leads=20, events=600, seed=1, start_ms=1_700_000_000_000, days=30))
>>> evs[0]["type"], evs[0]["lead_id"]
('lead_created', 'L-000001')
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from leadscore.schemas.validation import Event, format_ts_ms, validate_event
from leadscore.settings import Settings
from leadscore.tooling.exceptions import SimulationConfigError
from leadscore.tooling.sim_sources import Extra, day_events, draw_extra, expected_events, poisson

__all__ = [
    "SimConfig",
    "simulate",
    "simulated_events",
    "iter_live",
    "write_jsonl",
    "produce_events",
]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
SITE = "https://www.northwind-analytics.example"

# ---------------------------------------------------------------------------------------------
# Firmographic distributions: (value, weight, effect on the hidden fit in logit units).
# The effects are moderate on purpose: profile alone should rank leads, not decide them.
# ---------------------------------------------------------------------------------------------
COMPANY_SIZES: tuple[tuple[str, float, float], ...] = (
    ("1-10", 0.16, -0.6),
    ("11-50", 0.24, -0.2),
    ("51-200", 0.22, 0.1),
    ("201-500", 0.14, 0.3),
    ("501-1000", 0.09, 0.35),
    ("1001-5000", 0.09, 0.3),
    ("5000+", 0.06, 0.15),  # enterprises buy, but slowly and often elsewhere
)
INDUSTRIES: tuple[tuple[str, float, float], ...] = (
    ("Software", 0.22, 0.3),
    ("Financial Services", 0.12, 0.2),
    ("Healthcare", 0.09, 0.05),
    ("Manufacturing", 0.10, 0.0),
    ("Retail", 0.08, -0.05),
    ("Professional Services", 0.09, 0.0),
    ("Media", 0.05, -0.1),
    ("Telecommunications", 0.05, 0.1),
    ("Education", 0.07, -0.45),
    ("Government", 0.04, -0.35),
    ("Logistics", 0.05, 0.05),
    ("Non-profit", 0.04, -0.5),
)
# Titles are deliberately messy ("Director of IT" is not "Director"), as in real CRMs.
JOB_TITLES: tuple[tuple[str, float, float], ...] = (
    ("CEO", 0.03, 0.45),
    ("CTO", 0.03, 0.45),
    ("CFO", 0.015, 0.35),
    ("Founder", 0.03, 0.25),
    ("VP Sales", 0.035, 0.6),
    ("VP Marketing", 0.035, 0.55),
    ("VP Engineering", 0.02, 0.4),
    ("Director", 0.06, 0.45),
    ("Director of Marketing", 0.04, 0.4),
    ("Director of IT", 0.03, 0.35),
    ("Head of Growth", 0.025, 0.4),
    ("Head of Operations", 0.02, 0.3),
    ("Marketing Manager", 0.09, 0.1),
    ("Sales Manager", 0.07, 0.15),
    ("Operations Manager", 0.05, 0.05),
    ("Product Manager", 0.05, 0.1),
    ("Software Engineer", 0.07, -0.15),
    ("Data Analyst", 0.05, -0.2),
    ("Analyst", 0.04, -0.25),
    ("Consultant", 0.05, -0.4),
    ("Marketing Specialist", 0.06, -0.1),
    ("Sales Representative", 0.05, -0.05),
    ("Coordinator", 0.03, -0.2),
    ("Student", 0.02, -1.2),
    ("Other", 0.03, -0.3),
)
# (code, weight, fit effect, UTC offset in hours)
COUNTRIES: tuple[tuple[str, float, float, int], ...] = (
    ("US", 0.38, 0.1, -5),
    ("GB", 0.10, 0.05, 0),
    ("DE", 0.08, 0.05, 1),
    ("CA", 0.06, 0.05, -5),
    ("FR", 0.05, 0.0, 1),
    ("NL", 0.04, 0.0, 1),
    ("AU", 0.05, 0.0, 10),
    ("IN", 0.07, -0.3, 5),
    ("BR", 0.04, -0.2, -3),
    ("SG", 0.03, 0.0, 8),
    ("JP", 0.03, -0.1, 9),
    ("ES", 0.03, -0.05, 1),
    ("SE", 0.02, 0.05, 1),
    ("IE", 0.02, 0.05, 0),
)


@dataclass(frozen=True, slots=True)
class _Source:
    name: str
    weight: float
    effect: float
    initial_intent: float  # mean size of the burst that comes with the lead's creation
    creation: str  # the web action that created the lead: "", "inbound", "demo", "webinar"
    sales_led: bool  # a human relationship, so conversion depends less on web behaviour


LEAD_SOURCES: tuple[_Source, ...] = (
    _Source("organic_search", 0.26, 0.0, 0.45, "inbound", False),
    _Source("paid_search", 0.14, -0.1, 0.45, "inbound", False),
    _Source("paid_social", 0.13, -0.5, 0.3, "inbound", False),
    _Source("referral", 0.07, 0.7, 0.7, "", True),
    _Source("demo_request", 0.06, 0.9, 1.6, "demo", False),
    _Source("webinar", 0.10, 0.1, 0.4, "webinar", False),
    _Source("content_syndication", 0.10, -0.6, 0.12, "", False),
    _Source("event", 0.08, 0.2, 0.5, "", True),
    _Source("outbound", 0.06, -0.3, 0.08, "", True),
)

# Local-time activity by hour: office hours, a lunch dip, some evening browsing.
_HOUR_WEIGHTS = (
    0.2,
    0.1,
    0.1,
    0.1,
    0.1,
    0.2,
    0.5,
    1.2,
    2.5,
    3.5,
    3.8,
    3.6,
    3.0,
    3.4,
    3.6,
    3.4,
    3.0,
    2.4,
    1.6,
    1.2,
    1.0,
    0.9,
    0.6,
    0.4,
)
# Monday..Sunday; the mean is 1 so the weekly volume does not depend on the factors.
_WEEKDAY_FACTOR = (1.18, 1.18, 1.18, 1.18, 1.18, 0.55, 0.55)
_CAMPAIGN_WEEKDAYS = (1, 3)  # Tuesday and Thursday, the classic B2B send days
_CAMPAIGN_HOUR_UTC = 14
_THEMES = ("nurture", "newsletter", "product-update", "case-study", "webinar-invite")

_PAGES = (
    "/",
    "/product",
    "/product/features",
    "/product/integrations",
    "/customers",
    "/about",
    "/security",
    "/careers",
    "/docs/getting-started",
    "/docs/api",
    "/blog/lead-scoring-101",
    "/blog/revops-metrics",
    "/blog/attribution-models",
    "/blog/intent-data",
    "/blog/pipeline-hygiene",
    "/changelog",
)
_PRICING = ("/pricing", "/pricing", "/pricing/enterprise", "/pricing/compare")
_ASSETS = (
    "/resources/state-of-revops-2026.pdf",
    "/resources/buyers-guide.pdf",
    "/resources/roi-calculator.xlsx",
    "/resources/case-study-fintech.pdf",
    "/resources/security-whitepaper.pdf",
)
_FORMS = ("/contact", "/trial/signup", "/webinar/register", "/newsletter/subscribe")
_EMAIL_LINKS = (
    "/blog/lead-scoring-101",
    "/blog/revops-metrics",
    "/customers",
    "/product/features",
    "/webinar/register",
    "/changelog",
    "/resources/buyers-guide.pdf",
)

# Hidden-process constants. The conversion intercept is tuned so that about 15-20 % of the
# leads of a 90-day history convert within it.
_CONV_INTERCEPT = -6.0
_CONV_FIT = 0.8
_CONV_INTENT = 1.7
_CONV_INTENT_SALES_LED = 0.9
_OPP_INTENT_BOOST = 0.8  # sales engagement: the prospect evaluates (pricing, docs, demo)
_RETIRE_AFTER_MS = 30 * DAY_MS  # closed leads go fully silent after this
_EMAIL_SHARE = 0.38  # share of the non-fixed event budget spent on email events
_MAX_SEND_PROB = 0.92


@dataclass(frozen=True)
class SimConfig:
    """Size and shape of a simulated history.

    Parameters
    ----------
    leads
        Number of leads created during the history (ids ``L-000001`` ...).
    events
        Approximate total number of events; the realised count is within about 10 % when
        there are at least ~10 events per lead (below that the fixed CRM events dominate).
    seed
        Seed of every random choice; the same config gives the same output.
    start_ms
        Start of the history in epoch ms; default: now minus ``days``.
    days
        Length of the history in days.
    conversion_delay_days
        Range of the delay from the ``opportunity`` stage to the close (``converted``).
    """

    leads: int = 1000
    events: int = 40000
    seed: int = 7
    start_ms: int | None = None
    days: float = 90.0
    conversion_delay_days: tuple[float, float] = (2.0, 20.0)
    concept_drift_day: float | None = None
    """From this day of the history on, what converts changes: the effects of company size,
    industry and job title on conversion flip sign and weigh twice as much, and current
    intent half as much (behaviour itself is unchanged, so the events look alike)."""
    data_drift_day: float | None = None
    """Leads created from this day on come from another mix: the weights of industries,
    countries and lead sources are reversed."""
    new_source_signal: bool = True
    """Whether the social and enrichment sources carry signal (intent surges, an advocate's
    goodwill and a marketing-automation stack raise the conversion odds; firmographics are
    the company's own). False gives a control world: the same kinds and volumes of those
    events, independent of who converts (:mod:`leadscore.tooling.sim_sources`)."""

    def __post_init__(self) -> None:
        if self.leads < 1:
            raise SimulationConfigError(f"leads must be >= 1, got {self.leads}")
        if self.events < 0:
            raise SimulationConfigError(f"events must be >= 0, got {self.events}")
        if not self.days > 0:
            raise SimulationConfigError(f"days must be > 0, got {self.days}")
        lo, hi = self.conversion_delay_days
        if not 0 <= lo <= hi:
            raise SimulationConfigError(
                f"conversion_delay_days must satisfy 0 <= lo <= hi, got {lo, hi}"
            )


@dataclass(slots=True)
class _Lead:
    """One lead: visible profile, hidden traits, latent trajectory and event-side state."""

    idx: int
    lead_id: str
    created_ms: int
    first_day: int
    profile: dict[str, str]  # the true profile
    shown: dict[str, str | None]  # what lead_created carries (may be missing or stale)
    source: _Source
    tz: int
    fit: float
    fit_after: float  # the fit that drives conversion after a concept drift
    researcher: bool
    act: float  # personal browsing habit
    email_prop: float  # personal habit of opening mail
    bot_opens: bool  # behind a privacy proxy that pre-fetches every mail
    bad_email: bool
    base: float  # baseline intent
    decay: float  # daily intent retention
    burst_rate: float  # daily probability of a new burst of interest
    burst: float  # current burst intent
    bad_dq_day: int  # days after creation when a bad address gets the lead disqualified
    intents: list[float] = field(default_factory=list)  # intent per day since first_day
    opp_ms: int | None = None
    close_ms: int | None = None
    close_kind: str = ""
    pending: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)  # crm events
    extra: Extra | None = None  # social and enrichment traits (sim_sources)
    unsubscribed: bool = False
    email_dead: bool = False
    demo_done: int = 0


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _sat(intent: float) -> float:
    """Saturating transform of intent to [0, 1): behaviour can't grow without bound."""
    return intent / (intent + 0.8)


def _pick(
    rng: random.Random, table: tuple[tuple[Any, ...], ...], reverse: bool = False
) -> tuple[Any, ...]:
    weights = [row[1] for row in table]
    return rng.choices(table, weights=weights[::-1] if reverse else weights)[0]


def _session_plan(
    intent: float, researcher: bool, demo_done: int, landing: bool
) -> tuple[float, float, float, float, float]:
    """Mean extra page views and the probabilities of pricing, download, form and demo.

    This is the heart of the behavioural signal: high-intent sessions look at pricing and ask
    for demos; researchers read and download a lot but almost never ask for a demo.
    """
    f = _sat(intent)
    extra_pv = (0.5 if landing else 0.8) + 1.6 * f + (1.5 if researcher else 0.0)
    p_pricing = 0.02 + 0.45 * f**1.5
    p_download = 0.04 + 0.08 * f + (0.25 if researcher else 0.0)
    p_form = 0.01 + 0.08 * f
    p_demo = 0.001 if researcher else 0.001 + 0.10 * f * f
    if demo_done:
        p_demo *= 0.25  # one demo is usually enough
    return extra_pv, p_pricing, p_download, p_form, p_demo


def _session_expect(intent: float, researcher: bool, landing: bool = False) -> float:
    """Expected number of events in a session (used to size the event budget)."""
    extra, p_pr, p_cd, p_fs, p_dr = _session_plan(intent, researcher, 0, landing)
    return 1.0 + extra + 1.3 * p_pr + p_cd + p_fs + p_dr


def _email_probs(lead: _Lead, intent: float) -> tuple[float, float, float]:
    """Probabilities of a human open, a click given an open, an unsubscribe given an open."""
    f = _sat(intent)
    p_open = min(0.95, lead.email_prop * (0.14 + 0.22 * f))
    p_click = 0.08 + 0.30 * f
    p_unsub = 0.004 + 0.012 * (1.0 - f)
    return p_open, p_click, p_unsub


def _email_expect(lead: _Lead, intent: float) -> float:
    """Expected number of events caused by one sent email (sent, opens, clicks, landing)."""
    if lead.bad_email:
        return 2.0
    p_open, p_click, p_unsub = _email_probs(lead, intent)
    landing = 0.8 * _session_expect(intent, lead.researcher, landing=True)
    bot = 0.97 if lead.bot_opens else 0.0
    return 1.0 + bot + p_open * (1.2 + p_click * (1.0 + landing) + p_unsub)


class _World:
    """The simulated market: leads, their hidden processes and the events they emit."""

    def __init__(self, config: SimConfig, hist_start_ms: int) -> None:
        self.cfg = config
        self.hist_start = hist_start_ms
        self.hist_end = hist_start_ms + round(config.days * DAY_MS)
        self.first_day = hist_start_ms // DAY_MS
        self.hist_last_day = (self.hist_end - 1) // DAY_MS
        # Separate streams so that, e.g., a change in email behaviour doesn't reshuffle who
        # converts: population, hidden process and observable events each have their own.
        self._pop = random.Random(f"leadscore-sim/{config.seed}/population")  # noqa: S311
        self._lat = random.Random(f"leadscore-sim/{config.seed}/latent")  # noqa: S311
        self._ev = random.Random(f"leadscore-sim/{config.seed}/events")  # noqa: S311
        # The social and enrichment sources draw from streams of their own, so the web,
        # email and CRM events keep their draws whatever those sources do.
        self._xpop = random.Random(f"leadscore-sim/{config.seed}/sources-population")  # noqa: S311
        self._xev = random.Random(f"leadscore-sim/{config.seed}/sources-events")  # noqa: S311
        self._heap: list[tuple[int, int, str, str, str, dict[str, Any]]] = []
        self._seq = 0
        self._hour_cum: dict[int, tuple[list[float], float]] = {}
        self._arrivals: dict[int, list[_Lead]] = {}
        self._active: list[_Lead] = []
        self._next_idx = 1
        self.leads: list[_Lead] = []
        lo, hi = config.conversion_delay_days
        self._delay_ms = (lo * DAY_MS, hi * DAY_MS)

        # History population: creation times spread over the history, in order of creation.
        span = max(1, self.hist_end - hist_start_ms - HOUR_MS)
        created = sorted(
            hist_start_ms + int(self._pop.random() * span) for _ in range(config.leads)
        )
        for ms in created:
            lead = self._new_lead(ms)
            self._arrivals.setdefault(lead.first_day, []).append(lead)
        # Phase 1: the hidden process over the whole history, lead by lead.
        for lead in self.leads:
            for day in range(lead.first_day, self.hist_last_day + 1):
                self._step_latent(lead, day)
        # Phase 2: size web and email activity so the history has about `events` events.
        self.web_scale, self.send_prob = self._calibrate()

    def _drift_ms(self, day: float | None) -> int | float:
        """When a drift starts (epoch ms), or never."""
        return math.inf if day is None else self.hist_start + day * DAY_MS

    # ----------------------------------------------------------------------------- population
    def _new_lead(self, created_ms: int) -> _Lead:
        rng = self._pop
        drifted = self._drift_ms(self.cfg.data_drift_day) <= created_ms
        size, _, size_fx = _pick(rng, COMPANY_SIZES)
        industry, _, ind_fx = _pick(rng, INDUSTRIES, drifted)
        title, _, title_fx = _pick(rng, JOB_TITLES)
        country, _, country_fx, tz = _pick(rng, COUNTRIES, drifted)
        src_weights = [s.weight for s in LEAD_SOURCES]
        src: _Source = rng.choices(
            LEAD_SOURCES, weights=src_weights[::-1] if drifted else src_weights
        )[0]
        fit = size_fx + ind_fx + title_fx + country_fx + src.effect + rng.gauss(0.0, 0.35)
        fit_after = fit - 2.0 * (size_fx + ind_fx + title_fx)
        p_research = 0.05
        if title == "Student":
            p_research = 0.7
        elif title in ("Consultant", "Analyst"):
            p_research = 0.25
        if industry == "Education":
            p_research += 0.1
        researcher = rng.random() < p_research
        in_market = rng.random() < 0.25 + 0.25 * _sigmoid(fit)
        profile = {
            "company_size": size,
            "industry": industry,
            "job_title": title,
            "country": country,
            "lead_source": src.name,
        }
        shown: dict[str, str | None] = dict(profile)
        # Forms capture little; enrichment later fills or corrects a field (lead_updated).
        pending: list[tuple[int, str, dict[str, Any]]] = []
        if rng.random() < 0.32:
            fld = rng.choices(("job_title", "company_size", "industry"), weights=(45, 35, 20))[0]
            if fld == "company_size" and rng.random() < 0.5:
                i = [s[0] for s in COMPANY_SIZES].index(size)
                j = min(len(COMPANY_SIZES) - 1, max(0, i + rng.choice((-1, 1))))
                shown[fld] = COMPANY_SIZES[j][0]  # a stale estimate, corrected later
            else:
                shown[fld] = None
            when = created_ms + int(rng.uniform(0.5, 1.0 + rng.expovariate(1 / 12)) * DAY_MS)
            pending.append((when, "lead_updated", {fld: profile[fld]}))
        for fld, p_missing in (("job_title", 0.05), ("company_size", 0.06), ("industry", 0.04)):
            if shown[fld] is not None and rng.random() < p_missing:
                shown[fld] = None  # never enriched: the truth stays hidden
        idx = self._next_idx
        self._next_idx += 1
        bad_email = rng.random() < 0.03
        lead = _Lead(
            idx=idx,
            lead_id=f"L-{idx:06d}",
            created_ms=created_ms,
            first_day=created_ms // DAY_MS,
            profile=profile,
            shown=shown,
            source=src,
            tz=tz,
            fit=fit,
            fit_after=fit_after,
            researcher=researcher,
            act=min(4.0, rng.lognormvariate(0.0, 0.5)) * (2.5 if researcher else 1.0),
            email_prop=min(2.5, rng.lognormvariate(0.0, 0.55)),
            bot_opens=rng.random() < 0.2,
            bad_email=bad_email,
            base=0.04 * rng.lognormvariate(0.0, 0.6) + 0.04 * _sigmoid(fit),
            decay=math.exp(-1.0 / rng.uniform(3.0, 12.0)),
            burst_rate=0.012 * math.exp(0.5 * fit) * (2.5 if in_market else 1.0),
            burst=src.initial_intent * rng.expovariate(1.0),
            bad_dq_day=rng.randint(2, 15) if bad_email and rng.random() < 0.5 else -1,
            pending=pending,
        )
        lead.extra = draw_extra(self._xpop, profile, created_ms, signal=self.cfg.new_source_signal)
        self.leads.append(lead)
        return lead

    # ---------------------------------------------------------------------------------- time
    def _time_in_day(self, rng: random.Random, tz: int, day: int, after: int) -> int:
        """A moment of ``day`` weighted by office hours at UTC offset ``tz``, after ``after``."""
        cum_total = self._hour_cum.get(tz)
        if cum_total is None:
            cum: list[float] = []
            acc = 0.0
            for h in range(24):
                acc += _HOUR_WEIGHTS[(h + tz) % 24]
                cum.append(acc)
            cum_total = (cum, acc)
            self._hour_cum[tz] = cum_total
        cum, total = cum_total
        hour = min(23, bisect.bisect_right(cum, rng.random() * total))
        ms = day * DAY_MS + hour * HOUR_MS + int(rng.random() * HOUR_MS)
        if ms <= after:
            day_end = (day + 1) * DAY_MS
            ms = after + 1 + int(rng.random() * max(1, day_end - after - 2))
        return ms

    # ------------------------------------------------------------------------ hidden process
    def _step_latent(self, lead: _Lead, day: int) -> None:
        """Advance the hidden intent one day and decide conversion or disqualification."""
        rng = self._lat
        day_ms = day * DAY_MS
        if lead.close_ms is not None and lead.close_ms < day_ms:
            lead.intents.append(0.02)  # closed: no more buying intent
            return
        age = day - lead.first_day
        if age > 0:
            lead.burst *= lead.decay
            if rng.random() < lead.burst_rate:
                lead.burst += rng.gammavariate(1.5, 0.6)
        intent = lead.base + lead.burst
        if lead.opp_ms is None and lead.close_ms is None:
            coef = _CONV_INTENT_SALES_LED if lead.source.sales_led else _CONV_INTENT
            if day_ms >= self._drift_ms(self.cfg.concept_drift_day):
                logit = (
                    _CONV_INTERCEPT + 2 * _CONV_FIT * lead.fit_after + coef / 2 * min(intent, 4.0)
                )
            else:
                logit = _CONV_INTERCEPT + _CONV_FIT * lead.fit + coef * min(intent, 4.0)
            if lead.source.sales_led:
                logit += 0.4
            if lead.extra is not None:
                logit += lead.extra.logit(day_ms)
            if lead.researcher:
                logit -= 3.0
            if rng.random() < _sigmoid(logit):
                t = self._time_in_day(rng, lead.tz, day, lead.created_ms + HOUR_MS)
                lo, hi = self._delay_ms
                # Most deals close early in the window, a few drag on.
                close = t + int(rng.triangular(lo, hi, lo + (hi - lo) * 0.25))
                won = rng.random() < _sigmoid(1.6 + 0.5 * lead.fit)
                lead.opp_ms, lead.close_ms = t, close
                lead.pending.append((t, "stage_changed", {"stage": "opportunity"}))
                if won:
                    lead.close_kind = "converted"
                    lead.pending.append((close, "converted", {"stage": "closed_won"}))
                else:
                    lead.close_kind = "lost"
                    reason = rng.choice(("lost_to_competitor", "no_decision", "budget_cut"))
                    lead.pending.append((close, "disqualified", {"reason": reason}))
                lead.burst += _OPP_INTENT_BOOST
                intent += _OPP_INTENT_BOOST
            else:
                reason = self._dq_reason(rng, lead, age, intent)
                if reason:
                    t = self._time_in_day(rng, lead.tz, day, lead.created_ms + HOUR_MS)
                    lead.close_ms, lead.close_kind = t, "disqualified"
                    lead.pending.append((t, "disqualified", {"reason": reason}))
        lead.intents.append(intent)

    def _dq_reason(self, rng: random.Random, lead: _Lead, age: int, intent: float) -> str:
        """A disqualification reason if the lead is disqualified today, else ''."""
        if age == lead.bad_dq_day:
            return "invalid_contact"
        p = 0.0007 * math.exp(-0.8 * lead.fit)
        if lead.researcher:
            p += 0.004
        silent = age > 40 and intent < 0.08
        if silent:
            p += 0.004
        if rng.random() >= p:
            return ""
        if lead.researcher:
            if lead.profile["job_title"] == "Student":
                return "student"
            return rng.choice(("not_a_buyer", "competitor"))
        if silent:
            return "unresponsive"
        if lead.fit < -0.5:
            return rng.choice(("bad_fit", "too_small"))
        return rng.choice(("no_budget", "duplicate", "bad_fit", "no_authority"))

    def _status(self, lead: _Lead, day: int) -> str:
        """'open', 'opp' or the close kind, as seen at the start of ``day``."""
        day_ms = day * DAY_MS
        if lead.close_ms is not None and lead.close_ms < day_ms:
            return lead.close_kind
        if lead.opp_ms is not None and lead.opp_ms < day_ms + DAY_MS:
            return "opp"
        return "open"

    def _session_rate(self, lead: _Lead, intent: float, status: str) -> float:
        """Unscaled expected web sessions per day."""
        base = 0.35 if lead.researcher else 0.08
        rate = lead.act * (base + intent)
        if status == "converted":
            return rate * 0.15  # customers come back for docs and login pages
        if status in ("disqualified", "lost"):
            return rate * 0.05
        return rate

    def _send_weight(self, lead: _Lead, status: str) -> float:
        """Relative chance of receiving a nurture campaign.

        Nurture keeps running during an opportunity: suppressing it would let the model read
        the hidden pipeline stage off the email volume instead of learning from behaviour.
        Closed leads leave the nurture lists.
        """
        return 1.0 if status in ("open", "opp") else 0.0

    # --------------------------------------------------------------------------- calibration
    def _sources_expect(self, lead: _Lead) -> float:
        """Expected social and enrichment events of ``lead`` in the history."""
        if lead.extra is None:
            return 0.0
        retired: float = math.inf
        if lead.close_ms is not None and lead.close_kind:
            retired = lead.close_ms + _RETIRE_AFTER_MS
        return expected_events(lead.extra, lead.created_ms, self.hist_end, retired)

    def _calibrate(self) -> tuple[float, float]:
        """Web-session scale and campaign send probability that hit the requested volume.

        Expected counts are computed exactly from the hidden trajectories, so the realised
        total only differs by sampling noise.
        """
        end = self.hist_end
        fixed = 0.0
        web = 0.0
        mail = 0.0
        for lead in self.leads:
            fixed += 1.0 + sum(1.0 for ms, _, _ in lead.pending if ms < end)
            fixed += self._sources_expect(lead)
            if lead.source.creation:
                fixed += 1.0
            fixed += _email_expect(lead, lead.intents[0])  # welcome email
            for k, intent in enumerate(lead.intents):
                day = lead.first_day + k
                status = self._status(lead, day)
                if status in ("disqualified", "lost", "converted") and lead.close_ms is not None:
                    if day * DAY_MS > lead.close_ms + _RETIRE_AFTER_MS:
                        break
                frac = 1.0
                if k == 0:
                    frac = ((day + 1) * DAY_MS - lead.created_ms) / DAY_MS
                if day == self.hist_last_day:
                    frac = min(frac, (end - day * DAY_MS) / DAY_MS)
                wk = _WEEKDAY_FACTOR[(day + 3) % 7]
                web += (
                    self._session_rate(lead, intent, status)
                    * wk
                    * frac
                    * _session_expect(intent, lead.researcher)
                )
                if (day + 3) % 7 in _CAMPAIGN_WEEKDAYS and not lead.bad_email:
                    send_ms = day * DAY_MS + _CAMPAIGN_HOUR_UTC * HOUR_MS
                    if lead.created_ms < send_ms < end:
                        w = self._send_weight(lead, status)
                        if w:
                            mail += w * _email_expect(lead, intent)
        rest = max(0.0, self.cfg.events - fixed)
        send_prob = min(_MAX_SEND_PROB, _EMAIL_SHARE * rest / mail) if mail > 0 else 0.0
        web_scale = (rest - send_prob * mail) / web if web > 0 else 0.0
        return max(web_scale, 1e-3), send_prob

    # -------------------------------------------------------------------------------- events
    def _push(self, ts: int, lead: _Lead, source: str, etype: str, attrs: dict[str, Any]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ts, self._seq, lead.lead_id, source, etype, attrs))

    def _create(self, lead: _Lead) -> None:
        """lead_created, the web action that caused it, and the welcome email."""
        rng = self._ev
        t0 = lead.created_ms
        self._push(t0, lead, "crm", "lead_created", dict(lead.shown))
        kind = lead.source.creation
        if kind:
            # The tracker's web event lands just after the CRM record it triggered.
            t = t0 + rng.randint(300, 3000)
            sid = f"ws-{rng.getrandbits(48):012x}"
            if kind == "demo":
                lead.demo_done += 1
                etype, url = "demo_request", "/demo"
            elif kind == "webinar":
                etype, url = "form_submit", "/webinar/register"
            elif rng.random() < 0.5:
                etype, url = "form_submit", rng.choice(("/contact", "/trial/signup"))
            else:
                etype, url = "content_download", rng.choice(_ASSETS)
            dur = round(rng.uniform(15.0, 90.0), 1)
            self._push(
                t, lead, "web", etype, {"url": SITE + url, "duration_s": dur, "session_id": sid}
            )
        send = t0 + rng.randint(120_000, 1_200_000)
        self._send_email(lead, send, "cmp-welcome-series", lead.intents[0])

    def _session(self, lead: _Lead, start: int, intent: float, landing: str = "") -> None:
        """One web session: a landing page, some browsing, maybe a high-intent action."""
        rng = self._ev
        extra, p_pr, p_cd, p_fs, p_dr = _session_plan(
            intent, lead.researcher, lead.demo_done, bool(landing)
        )
        middle = ["page_view"] * poisson(rng, extra)
        if rng.random() < p_pr:
            middle.append("pricing_view")
            if rng.random() < 0.3:
                middle.append("pricing_view")
        if rng.random() < p_cd:
            middle.append("content_download")
        rng.shuffle(middle)
        # Forms and demo requests close a session: they are where a visit ends up.
        if rng.random() < p_fs:
            middle.append("form_submit")
        if rng.random() < p_dr:
            middle.append("demo_request")
            lead.demo_done += 1
        sid = f"ws-{rng.getrandbits(48):012x}"
        f = _sat(intent)
        t = start
        for i, etype in enumerate(["page_view", *middle]):
            attrs: dict[str, Any]
            if etype == "page_view":
                url = landing if (i == 0 and landing) else SITE + rng.choice(_PAGES)
                dur = rng.lognormvariate(3.5, 0.9)
            elif etype == "pricing_view":
                url = SITE + rng.choice(_PRICING)
                dur = rng.lognormvariate(math.log(50.0 + 80.0 * f), 0.7)
            elif etype == "content_download":
                url = SITE + rng.choice(_ASSETS)
                dur = rng.uniform(4.0, 20.0)
            elif etype == "form_submit":
                url = SITE + rng.choice(_FORMS)
                dur = rng.uniform(20.0, 90.0)
            else:
                url = SITE + "/demo"
                dur = rng.uniform(30.0, 120.0)
            dur = round(min(dur, 1800.0), 1)
            attrs = {"url": url, "duration_s": dur, "session_id": sid}
            if i == 0 and landing:
                attrs["referrer"] = "email"
            self._push(t, lead, "web", etype, attrs)
            t += int(dur * 1000) + rng.randint(500, 8000)

    def _send_email(self, lead: _Lead, send: int, campaign: str, intent: float) -> None:
        """email_sent and whatever the recipient (or their mail proxy) does with it."""
        rng = self._ev
        cid = {"campaign_id": campaign}
        self._push(send, lead, "email", "email_sent", cid)
        if lead.bad_email:
            self._push(send + rng.randint(1000, 60_000), lead, "email", "email_bounce", cid)
            lead.email_dead = True
            return
        if lead.bot_opens and rng.random() < 0.97:
            self._push(send + rng.randint(1000, 90_000), lead, "email", "email_open", cid)
        p_open, p_click, p_unsub = _email_probs(lead, intent)
        if rng.random() >= p_open:
            return
        opened = send + int(min(5 * DAY_MS, rng.lognormvariate(math.log(3 * HOUR_MS), 1.1)))
        self._push(opened, lead, "email", "email_open", cid)
        if rng.random() < 0.2:
            again = opened + int(rng.expovariate(1 / (8 * HOUR_MS)))
            self._push(again, lead, "email", "email_open", cid)
        if rng.random() < p_click:
            clicked = opened + rng.randint(5000, 120_000)
            link = SITE + rng.choice(_EMAIL_LINKS) + f"?utm_source=email&utm_campaign={campaign}"
            self._push(clicked, lead, "email", "email_click", {**cid, "link": link})
            if rng.random() < 0.8:
                self._session(lead, clicked + rng.randint(1000, 5000), intent, landing=link)
        if rng.random() < p_unsub:
            self._push(
                opened + rng.randint(10_000, 300_000), lead, "email", "email_unsubscribe", cid
            )
            lead.unsubscribed = True

    def _live_day(self, day: int) -> None:
        """Beyond the history: new arrivals and one step of the hidden process for everyone."""
        rate = self.cfg.leads / self.cfg.days
        for _ in range(poisson(self._pop, rate)):
            # Arrival times follow US office hours, where most of the market sits.
            created = self._time_in_day(self._pop, -5, day, day * DAY_MS)
            self._arrivals.setdefault(day, []).append(self._new_lead(created))
        self._arrivals.setdefault(day, []).sort(key=lambda ld: ld.created_ms)
        for lead in self._arrivals[day]:
            self._step_latent(lead, day)
        for lead in self._active:
            self._step_latent(lead, day)

    def _day(self, day: int) -> None:
        """Generate all events that originate on ``day`` (they may land on later days)."""
        day_ms = day * DAY_MS
        new = self._arrivals.pop(day, [])
        for lead in new:
            self._create(lead)
        self._active.extend(new)
        wk = _WEEKDAY_FACTOR[(day + 3) % 7]
        cid: str | None = None
        if (day + 3) % 7 in _CAMPAIGN_WEEKDAYS:
            theme = _THEMES[(day // 7 * 2 + ((day + 3) % 7 == 3)) % len(_THEMES)]
            cid = f"cmp-{format_ts_ms(day_ms)[:10].replace('-', '')}-{theme}"
        keep: list[_Lead] = []
        for lead in self._active:
            status = self._status(lead, day)
            closed = status != "open" and status != "opp" and lead.close_ms is not None
            if closed and lead.close_ms is not None and day_ms > lead.close_ms + _RETIRE_AFTER_MS:
                continue  # retired: silent from now on
            keep.append(lead)
            self._lead_day(lead, day, status, wk, cid)
        self._active = keep

    def _lead_day(
        self, lead: _Lead, day: int, status: str, wk: float, campaign: str | None
    ) -> None:
        """One lead's events of ``day``: due CRM events, web sessions, a campaign email."""
        rng = self._ev
        day_ms = day * DAY_MS
        day_end = day_ms + DAY_MS
        intent = lead.intents[day - lead.first_day]
        if lead.pending:
            due = [p for p in lead.pending if p[0] < day_end]
            if due:
                lead.pending = [p for p in lead.pending if p[0] >= day_end]
                for ts, etype, attrs in sorted(due, key=lambda p: p[0]):
                    self._push(ts, lead, "crm", etype, attrs)
        after = max(day_ms, lead.created_ms)
        frac = (day_end - after) / DAY_MS
        lam = self.web_scale * self._session_rate(lead, intent, status) * wk * frac
        for _ in range(poisson(rng, lam)):
            if after > day_ms:
                start = after + 1 + int(rng.random() * (day_end - after - 1))
            else:
                start = self._time_in_day(rng, lead.tz, day, after)
            self._session(lead, start, intent)
        if campaign is not None and not (lead.unsubscribed or lead.email_dead):
            w = self._send_weight(lead, status)
            send = day_ms + _CAMPAIGN_HOUR_UTC * HOUR_MS + rng.randint(0, 1_800_000)
            if w and lead.created_ms < send and rng.random() < w * self.send_prob:
                self._send_email(lead, send, campaign, intent)
        if lead.extra is not None:
            for ts, source, etype, attrs in day_events(self._xev, lead.extra, day, after):
                self._push(ts, lead, source, etype, attrs)

    def run(self, since_ms: int, until_ms: int | None, tag: str) -> Iterator[dict[str, Any]]:
        """Events with ``since_ms <= ts < until_ms`` (no upper bound if None), in time order."""
        n = 0
        day = self.first_day
        prefix = f"s{self.cfg.seed}-{tag}{since_ms}-"
        while True:
            if day > self.hist_last_day:
                if until_ms is not None:
                    return
                self._live_day(day)
            self._day(day)
            # Every event generated from a later day is at or after the next midnight, so all
            # events before it are final and can be released in order.
            horizon = (day + 1) * DAY_MS
            heap = self._heap
            while heap and heap[0][0] < horizon:
                ts, _, lead_id, source, etype, attrs = heapq.heappop(heap)
                if until_ms is not None and ts >= until_ms:
                    return
                if ts < since_ms:
                    continue
                n += 1
                yield {
                    "event_id": f"{prefix}{n:07d}",
                    "lead_id": lead_id,
                    "source": source,
                    "type": etype,
                    "ts": format_ts_ms(ts),
                    "attributes": attrs,
                }
            day += 1


def _default_start(config: SimConfig) -> int:
    now_ms = int(time.time()) * 1000
    return now_ms - round(config.days * DAY_MS)


def simulate(config: SimConfig) -> list[dict[str, Any]]:
    """All events of a simulated history, sorted by time.

    Parameters
    ----------
    config
        Size, seed and time span of the history.

    Returns
    -------
    list of dict
        Event envelopes (``event_id``, ``lead_id``, ``source``, ``type``, ``ts``,
        ``attributes``) with ``start_ms <= ts < start_ms + days``, sorted by ``ts``; ties are
        broken by generation order, which is deterministic. Event ids are
        ``s<seed>-h<start_ms>-<n>``, unique and reproducible.
    """
    start = config.start_ms if config.start_ms is not None else _default_start(config)
    world = _World(config, start)
    return list(world.run(start, world.hist_end, "h"))


def iter_live(config: SimConfig, start_ms: int) -> Iterator[dict[str, Any]]:
    """An endless, deterministic stream of events from ``start_ms`` on.

    The stream continues the world of the history of ``config``: existing leads keep their
    hidden intent and state, new leads keep arriving at ``leads / days`` per day. When
    ``config.start_ms`` is None the history is taken to end at ``start_ms`` (the demo case:
    train on the past, then go live). Timestamps never decrease; the caller paces them.
    Leads and events up to ``start_ms`` are simulated silently first, so a ``start_ms`` far
    beyond the history costs time in proportion to the gap.

    Parameters
    ----------
    config
        The history this stream continues.
    start_ms
        First possible event time (epoch ms).

    Yields
    ------
    dict
        Event envelopes as from :func:`simulate`, ids ``s<seed>-l<start_ms>-<n>``.
    """
    hist_start = config.start_ms
    if hist_start is None:
        hist_start = start_ms - round(config.days * DAY_MS)
    world = _World(config, hist_start)
    yield from world.run(start_ms, None, "l")


def write_jsonl(events: Iterable[dict[str, Any]], path: Path) -> None:
    """Write events as JSON lines (``leadscore simulate --out``)."""
    with path.open("wb") as fh:
        for ev in events:
            fh.write(orjson.dumps(ev) + b"\n")


def produce_events(
    settings: Settings,
    events: Iterable[dict[str, Any]],
    *,
    rate: float | None = None,
    progress: Callable[[str], None] | None = None,
    counted: Callable[[int], None] | None = None,
) -> int:
    """Produce events to their topics (created if missing); return how many were sent.
    ``counted`` hears the count sent so far (every 1,000), else ``progress`` a line."""
    from leadscore.infra.producer import EventProducer
    from leadscore.infra.topics import ensure_topics

    say = progress or (lambda _msg: None)
    ensure_topics(settings)
    producer = EventProducer(settings)
    producer.send_all(events, rate=rate, progress=counted or (lambda n: say(f"  sent {n}")))
    producer.flush_or_raise()
    return producer.sent


def simulated_events(config: SimConfig) -> list[Event]:
    """A simulated history as validated events (what training from events reads); the
    history ends now unless ``config.start_ms`` says otherwise."""
    now = int(time.time() * 1000)
    out = []
    for h in simulate(config):
        res = validate_event(
            orjson.dumps(h),
            topic_source=None,
            key=None,
            check_key=False,
            now_ms=now,
            max_future_ms=DAY_MS,
        )
        if isinstance(res, Event):
            out.append(res)
    return out
