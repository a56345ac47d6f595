"""``leadscore retention``: what leadscore keeps, where, and for how long.

Every figure comes from the settings: the configs leadscore gives a topic when it creates
it, the idle time the Lua script sets on a lead's Redis keys, the age past which the
archiver deletes a date partition. Where Kafka answers, the broker's own view of each
topic (DescribeConfigs) sits beside the configured one, so a topic created by hand or by an
older release shows up as differing; ``apply_retention`` sets those configs
(IncrementalAlterConfigs) and prunes the archive.

A broker that *reports* a config does not necessarily *enforce* it: Apache Kafka does; the
embedded Tansu broker stores configs but deletes and compacts nothing.
"""

from __future__ import annotations

from typing import Any

from leadscore.errors import KafkaUnavailableError
from leadscore.features.definitions import DAY_MS, RETENTION_MS
from leadscore.features.lua import PENDING_TTL_S
from leadscore.infra.archive import ArchiveError, archive_partitions, prune_archive
from leadscore.infra.topics import (
    ERASURE_TOPICS,
    INPUT_TOPICS,
    OUTPUT_TOPICS,
    ConfigDrift,
    alter_topic_configs,
    broker_topic_configs,
    config_drift,
    topic_configs,
)
from leadscore.settings import Settings

#: What each topic holds, by short name.
HOLDS = {
    "web": "web events (input; `rebuild` replays it)",
    "email": "email events (input; `rebuild` replays it)",
    "crm": "CRM events (input; `rebuild` replays it)",
    "social": "social engagement events, comments as sentiment (input; `rebuild` replays it)",
    "enrichment": "firmographics, technographics, intent (input; `rebuild` replays it)",
    "scores": "each lead's latest score (tombstone on erasure)",
    "alerts": "tier-change alerts",
    "dlq": "rejected messages, redacted, with the error",
    "scores.shadow": "each lead's latest shadow-challenger score",
    "erasure": "erasure requests (lead ids in clear)",
    "erasure.audit": "one audit record per erasure (lead id as a keyed hash)",
}
#: What leadscore writes but does not expire: the operator's retention applies.
ELSEWHERE = [
    "CRM sync sinks (PostgreSQL table lead_scores, webhook receivers): each lead's latest "
    "score until the lead is erased",
    "the sync's dead-letter file (LEADSCORE_SYNC_DEAD_LETTER): score batches the webhook "
    "never took, until deleted",
    "backups (`leadscore backup DIR`): a Redis snapshot (every lead's state) and the "
    "registry, until deleted; a lead erased after a backup is in it",
]
#: What `leadscore rebuild` needs of the input topics, and `retrain` of the archive with its
#: defaults (a 90-day window after a 30-day feature warm-up).
REBUILD_NEEDS_DAYS = RETENTION_MS // DAY_MS
RETRAIN_NEEDS_DAYS = 90 + RETENTION_MS // DAY_MS


def _days(ms: int) -> str:
    days = ms / DAY_MS
    text = f"{days:g} day" + ("" if days == 1 else "s")
    return text + (f" ({days / 365:.3g} years)" if days >= 365 else "")


def describe_config(config: dict[str, str]) -> str:
    """A topic config in words: ``deleted after 35 days``, ``compacted ...``."""
    policy = config.get("cleanup.policy", "delete")
    ms = config.get("retention.ms")
    by_age = (
        "deleted after the broker's default retention"
        if ms is None
        else "kept forever"
        if int(ms) < 0
        else f"deleted after {_days(int(ms))}"
    )
    if "compact" not in policy:
        return by_age
    text = "compacted: the latest record per lead, until a tombstone erases it"
    if "delete.retention.ms" in config:
        text += f"; tombstones kept {_days(int(config['delete.retention.ms']))}"
    lag = config.get("max.compaction.lag.ms")
    if lag is not None:
        # Kafka's default (Long.MAX_VALUE) sets no bound.
        text += (
            f"; older records compacted within {_days(int(lag))}"
            if int(lag) < 2**62
            else "; no bound on when older records are compacted"
        )
    return text + (f"; and {by_age}" if "delete" in policy else "")


def topics_report(
    settings: Settings, timeout: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each topic's configured retention beside the broker's, and how the broker was read."""
    wanted = topic_configs(settings)
    broker: dict[str, Any] = {"bootstrap": settings.kafka_bootstrap, "reachable": False}
    reported: dict[str, dict[str, str] | None] = {}
    if not settings.kafka_bootstrap:
        broker["error"] = "LEADSCORE_KAFKA_BOOTSTRAP is not set: configured values only"
    else:
        try:
            reported = broker_topic_configs(settings, wanted, timeout=timeout)
            broker["reachable"] = True
        except KafkaUnavailableError as exc:
            broker["error"] = str(exc)
    drift = config_drift(wanted, reported)
    rows = []
    for short in (*INPUT_TOPICS, *OUTPUT_TOPICS, *ERASURE_TOPICS):
        topic = settings.topic(short)
        row: dict[str, Any] = {
            "topic": topic,
            "holds": HOLDS.get(short, ""),
            "configured": wanted[topic],
            "configured_text": describe_config(wanted[topic]),
        }
        if broker["reachable"]:
            have = reported.get(topic)
            row["broker"] = have
            row["broker_text"] = (
                "no such topic yet (created with the configured values)"
                if have is None
                else describe_config(have)
            )
            row["differs"] = sorted(d.key for d in drift if d.topic == topic)
        rows.append(row)
    return rows, broker


def archive_report(settings: Settings, now_ms: int, root: str | None) -> dict[str, Any]:
    days = settings.archive_retention_days
    out: dict[str, Any] = {
        "root": root,
        "retention_days": days,
        "retention_text": f"date partitions older than {days} days deleted"
        if days
        else "kept forever",
    }
    if not root:
        out["error"] = "no archive root (LEADSCORE_ARCHIVE_ROOT, or --archive)"
        return out
    try:
        parts = archive_partitions(root)
        due = prune_archive(root, days, now_ms, dry_run=True).deleted if days else []
    except ArchiveError as exc:
        out["error"] = str(exc)
        return out
    dates = sorted({p.date for p in parts})
    out.update(
        partitions=len(parts),
        oldest=dates[0] if dates else None,
        newest=dates[-1] if dates else None,
        past_retention=len(due),
    )
    return out


def retention_report(
    settings: Settings,
    *,
    now_ms: int,
    archive_root: str | None = None,
    kafka_timeout: float = 5.0,
) -> dict[str, Any]:
    """Everything leadscore keeps and for how long, as one JSON-able dict."""
    topics, broker = topics_report(settings, kafka_timeout)
    monitor_days = settings.monitor_horizon_days + settings.monitor_window_days
    report: dict[str, Any] = {
        "topics": topics,
        "broker": broker,
        "redis": {
            "lead_state_idle_ttl_days": settings.state_idle_ttl_days,
            "event_id_dedupe_days": RETENTION_MS // DAY_MS,
            "pending_score_hours": min(settings.state_ttl_s, PENDING_TTL_S) / 3600,
            "erasure_suppress_days": settings.erasure_suppress_days,
        },
        "archive": archive_report(settings, now_ms, archive_root or settings.archive_root),
        "models": {
            "registry": str(settings.registry_root),
            "kept": "until deleted",
            "holds": "each version's trees, metrics and card, and its holdout.csv: the "
            "held-out moments with label and segment attributes, each lead under a "
            "pseudonym salted for that file alone (it names no lead)",
        },
        "monitor": {
            "state_dir": str(settings.monitor_state_dir),
            "forgets_lead_days": monitor_days,
        },
        "elsewhere": ELSEWHERE,
        "warnings": _warnings(settings, topics),
    }
    return report


def _warnings(settings: Settings, topics: list[dict[str, Any]]) -> list[str]:
    out = []
    inputs = settings.input_retention_days
    if 0 < inputs <= REBUILD_NEEDS_DAYS:
        out.append(
            f"LEADSCORE_INPUT_RETENTION_DAYS={inputs}: `leadscore rebuild` needs the input "
            f"topics to hold more than {REBUILD_NEEDS_DAYS} days to rebuild the windows exactly"
        )
    archive = settings.archive_retention_days
    if 0 < archive < RETRAIN_NEEDS_DAYS:
        out.append(
            f"LEADSCORE_ARCHIVE_RETENTION_DAYS={archive}: `leadscore retrain` reads "
            f"{RETRAIN_NEEDS_DAYS} days with its defaults (90-day window, 30-day warm-up)"
        )
    differing = [t["topic"] for t in topics if t.get("differs")]
    if differing:
        out.append(
            f"the broker holds other configs for {', '.join(differing)}: "
            "`leadscore retention --apply` sets the configured ones"
        )
    return out


def apply_retention(
    settings: Settings,
    *,
    now_ms: int,
    archive_root: str | None = None,
    kafka_timeout: float = 10.0,
) -> dict[str, Any]:
    """Prune the archive and set the configured retention on the topics that hold other
    configs (topics that don't exist yet are the worker's to create). Raises
    :class:`KafkaUnavailableError` when Kafka is configured but does not answer."""
    done: dict[str, Any] = {"topic_configs_set": [], "archive_deleted": [], "skipped": []}
    root = archive_root or settings.archive_root
    days = settings.archive_retention_days
    if not root:
        done["skipped"].append("archive: no archive root")
    elif days <= 0:
        done["skipped"].append("archive: LEADSCORE_ARCHIVE_RETENTION_DAYS=0 keeps it forever")
    else:
        done["archive_deleted"] = prune_archive(root, days, now_ms).deleted
    if not settings.kafka_bootstrap:
        done["skipped"].append("topics: LEADSCORE_KAFKA_BOOTSTRAP is not set")
        return done
    wanted = topic_configs(settings)
    drift = config_drift(wanted, broker_topic_configs(settings, wanted, timeout=kafka_timeout))
    done["topic_configs_set"] = [_drift_dict(d) for d in alter_topic_configs(settings, drift)]
    return done


def _drift_dict(d: ConfigDrift) -> dict[str, Any]:
    return {"topic": d.topic, "key": d.key, "value": d.want, "was": d.have}


def render_text(report: dict[str, Any], applied: dict[str, Any] | None = None) -> str:
    """The report for a terminal."""
    lines = ["What leadscore keeps, and for how long", ""]
    if applied is not None:
        lines += _applied_lines(applied)
    lines += _topic_lines(report["topics"], report["broker"])
    r = report["redis"]
    lines += [
        "",
        "Redis (per-lead state)",
        f"  feature state        expires {r['lead_state_idle_ttl_days']} days after the "
        "lead's last update (LEADSCORE_STATE_IDLE_TTL_DAYS)",
        f"  event ids (dedupe)   kept while within {r['event_id_dedupe_days']} days (event "
        "time) of the lead's newest event, and while its state lives",
        f"  unconfirmed scores   {r['pending_score_hours']:g} hours at most (re-sent after a "
        "worker crash)",
        f"  erasure suppression  an erased lead's events are dropped for "
        f"{r['erasure_suppress_days']} days (LEADSCORE_ERASURE_SUPPRESS_DAYS)",
    ]
    lines += _archive_lines(report["archive"])
    m, mon = report["models"], report["monitor"]
    lines += [
        "",
        f"Model registry         {m['registry']}: kept {m['kept']}; {m['holds']}",
        f"Monitor state          {mon['state_dir']}: a lead is forgotten "
        f"{mon['forgets_lead_days']:g} days after its last scored moment (outcome horizon + "
        "window, event time)",
        "",
        "Not expired by leadscore (your retention applies)",
        *(f"  {item}" for item in report["elsewhere"]),
    ]
    if report["warnings"]:
        lines += ["", "Warnings", *(f"  ! {w}" for w in report["warnings"])]
    return "\n".join(lines)


def _topic_lines(topics: list[dict[str, Any]], broker: dict[str, Any]) -> list[str]:
    lines = [
        "Kafka topics (configured: from the settings, set when leadscore creates the topic; "
        "broker: what it reports now)"
    ]
    for t in topics:
        lines += [
            f"  {t['topic']}  -  {t['holds']}",
            f"      configured  {t['configured_text']}",
        ]
        if "broker_text" in t:
            differs = f"  (differs: {', '.join(t['differs'])})" if t["differs"] else ""
            lines.append(f"      broker      {t['broker_text']}{differs}")
    if broker["reachable"]:
        lines.append(
            f"  broker: {broker['bootstrap']} (DescribeConfigs). A broker that reports a "
            "config need not enforce it: Apache Kafka does; the embedded broker (Tansu) "
            "deletes and compacts nothing."
        )
    else:
        lines.append(f"  broker: not read: {broker['error']}")
    return lines


def _archive_lines(a: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Event archive (LEADSCORE_ARCHIVE_RETENTION_DAYS)",
        f"  retention            {a['retention_text']} (by `leadscore archive` hourly, and "
        "`leadscore retention --apply`)",
    ]
    if "error" in a:
        return [*lines, f"  not read: {a['error']}"]
    span = f"from {a['oldest']} to {a['newest']}" if a["partitions"] else "none yet"
    return [
        *lines,
        f"  root                 {a['root']}",
        f"  date partitions      {a['partitions']}, {span}; {a['past_retention']} past retention",
    ]


def _applied_lines(applied: dict[str, Any]) -> list[str]:
    lines = ["Applied"]
    for c in applied["topic_configs_set"]:
        lines.append(f"  {c['topic']}: {c['key']} = {c['value']} (was {c['was']})")
    if not applied["topic_configs_set"]:
        lines.append("  topics: every existing topic already holds its configured retention")
    if not any(s.startswith("archive") for s in applied["skipped"]):
        lines.append(f"  archive: {len(applied['archive_deleted'])} date partitions deleted")
    lines += [f"  skipped: {s}" for s in applied["skipped"]]
    return [*lines, ""]
