"""``leadscore train``, ``predict``, ``models``: training, batch scoring, the registry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from leadscore.cli.common import count, emit, parse_duration_ms, say, timestamp_ms
from leadscore.errors import LeadscoreError
from leadscore.settings import Settings


def register(sub: Any) -> None:
    t = sub.add_parser(
        "train",
        help="train a model from an event history or a CRM table",
        description="--events SOURCE: point-in-time features, labels from CRM outcomes; "
        "SOURCE is a JSONL file or the event archive (`leadscore archive`)."
        " --data FILE --target COL: a CSV/Parquet export with a yes/no-like target."
        " The new version becomes the champion only if it passes the promotion gate "
        "(see `leadscore retrain --help`); --force promotes it regardless.",
    )
    t.add_argument(
        "--events", metavar="SOURCE", help="JSONL event history, or the event archive's root"
    )
    t.add_argument("--since", type=timestamp_ms, help="--events: only events at or after this")
    t.add_argument("--until", type=timestamp_ms, help="--events: only events before this")
    t.add_argument(
        "--horizon",
        type=parse_duration_ms,
        default=parse_duration_ms("30d"),
        help="label = converts within this time after the scoring moment (default 30d)",
    )
    t.add_argument("--data", help="CSV or Parquet table")
    t.add_argument("--target", help="target column of --data")
    t.add_argument(
        "--keep",
        action="append",
        metavar="COLUMN",
        help="keep a column flagged as leakage (repeatable)",
    )
    t.add_argument("--segment", help="report metrics per value of this column")
    t.add_argument(
        "--compare-without",
        metavar="SOURCES",
        help="--events: also train the same pipeline without these sources' features (comma "
        "separated, e.g. social,enrichment) on the same moments, and report whether they "
        "help by the promotion gate's paired test (the report's compare_without)",
    )
    t.add_argument(
        "--time-budget",
        type=float,
        default=60.0,
        help="seconds for the hyper-parameter search (default 60)",
    )
    t.add_argument(
        "--out",
        help="model registry: a directory or a URL such as s3://bucket/models "
        "(default LEADSCORE_MODEL_REGISTRY, else LEADSCORE_MODEL_DIR)",
    )
    t.add_argument("--no-promote", action="store_true", help="don't make it the champion")
    t.add_argument(
        "--force",
        action="store_true",
        help="make it the champion even if the promotion gate refuses it",
    )
    add_gate_arguments(t)
    t.add_argument("--json", action="store_true", help="print the report as one JSON line")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="batch scoring of a table: one score per row, same order")
    pr.add_argument("--model", required=True, help="a registry directory or a version directory")
    pr.add_argument("--data", required=True)
    pr.add_argument("--out", required=True, help="output CSV or Parquet")
    pr.add_argument(
        "--reasons",
        type=count,
        default=5,
        help="top reasons per row, exact TreeSHAP (default 5); they cost far more than the "
        "score on a large ensemble, 0 skips them for a fast scores-only run",
    )
    pr.set_defaults(func=cmd_predict)

    _register_models(sub)


def _register_models(sub: Any) -> None:
    m = sub.add_parser(
        "models",
        help="the model registry: list, show, promote, rollback, history, decisions",
        description="list: every version (* marks the champion). show VERSION: its metadata "
        "and model card (the promotion decision with its figures). promote VERSION: make it "
        "the champion by hand, once it passes the checks a worker makes before loading it "
        "(checksums, meta.json, LightGBM loading it in a child process); the gate is not "
        "asked. rollback: restore the champion before the current one. history: every "
        "champion change. decisions: every promotion decision, promoted or not. "
        "shadow VERSION (or --off): workers also score every event with VERSION and send "
        "those records to leads.scores.shadow, never to CRM sync. ab VERSION --share 0.1 "
        "(or --stop): VERSION scores that share of leads, picked by a stable hash for the "
        "life of the experiment; score records carry `experiment` and `arm`; a running "
        "experiment's share can't change (stop it, start a new one). Running workers pick "
        "up every change within seconds.",
    )
    m.add_argument(
        "action",
        choices=("list", "show", "promote", "rollback", "history", "decisions", "shadow", "ab"),
    )
    m.add_argument("version", nargs="?")
    m.add_argument(
        "--model-dir",
        help="model registry: a directory or a URL such as s3://bucket/models "
        "(default LEADSCORE_MODEL_REGISTRY, else LEADSCORE_MODEL_DIR)",
    )
    m.add_argument("--json", action="store_true", help="list: one JSON line per version")
    m.add_argument("--off", action="store_true", help="shadow: stop shadow scoring")
    m.add_argument(
        "--share", type=float, help="ab: share of leads the challenger scores (e.g. 0.1)"
    )
    m.add_argument(
        "--by",
        default="lead_id",
        help="ab: what is hashed to pick a lead's arm: lead_id (default) or a profile "
        "attribute (e.g. company_size), so that all leads sharing it see one model",
    )
    m.add_argument("--stop", action="store_true", help="ab: stop the running experiment")
    m.set_defaults(func=cmd_models)


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    out_dir = args.out or settings.registry_root
    if args.events:
        from leadscore.jobs.train_events import train_from_events

        report = train_from_events(
            args.events,
            horizon_ms=args.horizon,
            out_dir=out_dir,
            promote=not args.no_promote,
            force=args.force,
            policy=gate_policy(args),
            since_ms=args.since,
            until_ms=args.until,
            progress=say,
            sensitive=Settings.names(settings.sensitive),
            redactor=settings.redactor,
            compare_without=Settings.names(args.compare_without or ""),
        )
    else:
        if not args.data or not args.target:
            raise LeadscoreError("give --events FILE, or --data FILE with --target COLUMN")
        from leadscore.model.tabular import train_from_table

        report = train_from_table(
            Path(args.data),
            args.target,
            out_dir=out_dir,
            keep_columns=tuple(args.keep or ()),
            segment_column=args.segment,
            promote=not args.no_promote,
            force=args.force,
            policy=gate_policy(args),
            time_budget_s=args.time_budget,
            progress=say,
            sensitive=Settings.names(settings.sensitive),
        )
    if args.json:
        emit(report)
    else:
        say(json.dumps(report, indent=2, default=str))
    return 0


def cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.model.tabular import predict_table

    n = predict_table(Path(args.model), Path(args.data), Path(args.out), max_reasons=args.reasons)
    say(f"scored {n} rows -> {args.out}")
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.model.registry import Registry

    reg = Registry(args.model_dir or settings.registry_root)
    if args.action == "list":
        return _list_models(reg, args.json)
    if args.action == "history":
        for rec in reg.history():
            emit(rec)
        return 0
    if args.action == "decisions":
        for rec in reg.decisions():
            emit(rec)
        return 0
    if args.action == "rollback":
        old, new = reg.rollback()
        say(f"rolled back: {new} is the champion again in {reg.location} (was {old})")
        return 0
    if args.action in ("shadow", "ab"):
        return _side_models(reg, args)
    if not args.version:
        raise LeadscoreError(f"`leadscore models {args.action}` needs a VERSION")
    if args.action == "show":
        emit({**reg.meta(args.version), "card": reg.card(args.version)})
        return 0
    reg.promote(args.version, note="by hand")
    say(f"{args.version} is now the champion in {reg.location}")
    return 0


def _side_models(reg: Any, args: argparse.Namespace) -> int:
    """``models shadow`` and ``models ab``."""
    if args.action == "shadow":
        if args.off:
            reg.set_shadow(None)
            say("shadow scoring stopped")
        elif args.version:
            reg.set_shadow(args.version)
            say(f"workers now score every event with {args.version} too (leads.scores.shadow)")
        else:
            emit({"shadow": reg.shadow()})
        return 0
    if args.stop:
        stopped = reg.stop_experiment()
        say(f"experiment {stopped.id} stopped" if stopped else "no experiment was running")
        return 0
    if not args.version:
        exp = reg.experiment()
        emit({"experiment": None if exp is None else exp.as_dict()})
        return 0
    if args.share is None:
        raise LeadscoreError("`leadscore models ab VERSION` needs --share (e.g. 0.1)")
    from leadscore.features.definitions import PROFILE_FIELDS

    if args.by != "lead_id" and args.by not in PROFILE_FIELDS:
        raise LeadscoreError(
            f"--by {args.by!r}: give lead_id or a profile attribute: {', '.join(PROFILE_FIELDS)}"
        )
    exp = reg.start_experiment(args.version, args.share, args.by)
    emit(exp.as_dict())
    say(f"experiment {exp.id}: {exp.version} scores {exp.share:g} of leads (by {exp.by})")
    return 0


def _list_models(reg: Any, as_json: bool) -> int:
    versions = reg.list()
    if not versions and not as_json:
        say(f"no models in {reg.location}; train one with `leadscore train`")
    for v in versions:
        auc = (v.meta.get("metrics", {}).get("test") or {}).get("auc")
        card = reg.card(v.version) if not v.problem else None
        outcome = (card or {}).get("outcome", "-")
        if as_json:
            emit(
                {
                    "version": v.version,
                    "champion": v.champion,
                    "created_at": v.meta.get("created_at"),
                    "auc": auc,
                    "gate": outcome,
                    "problem": v.problem or None,
                }
            )
            continue
        auc_s = f"{auc:.4f}" if isinstance(auc, float) else "-"
        mark = "*" if v.champion else " "
        note = f"  unusable: {v.problem}" if v.problem else ""
        print(
            f"{mark} {v.version}  created {v.meta.get('created_at', '?')}  auc {auc_s}"
            f"  gate {outcome}{note}"
        )
    return 0


#: The promotion gate's flags: (flag, GatePolicy field, type, help with {} for the default).
_GATE_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--margin", "margin", float, "least AUC gain over the champion (default {})"),
    ("--alpha", "alpha", float, "one-sided paired DeLong test level (default {})"),
    ("--max-ece", "max_ece", float, "largest expected calibration error (default {})"),
    ("--min-leads", "min_leads", int, "least leads in the training window (default {})"),
    ("--min-conversions", "min_conversions", int, "least converted leads (default {})"),
    (
        "--segment-min",
        "segment_min_moments",
        int,
        "least held-out moments of a judged segment (default {})",
    ),
    (
        "--segment-min-class",
        "segment_min_class",
        int,
        "least held-out conversions (and non-conversions) of a judged segment (default {})",
    ),
    (
        "--segment-tolerance",
        "segment_tolerance",
        float,
        "largest AUC loss in a segment (default {})",
    ),
)


def add_gate_arguments(p: argparse.ArgumentParser) -> None:
    """The promotion gate's thresholds (defaults: :class:`GatePolicy`)."""
    from leadscore.model.gate import GatePolicy

    d = GatePolicy()
    g = p.add_argument_group("promotion gate")
    for flag, name, kind, text in _GATE_FLAGS:
        default = getattr(d, name)
        g.add_argument(flag, dest=name, type=kind, default=default, help=text.format(default))


def gate_policy(args: argparse.Namespace) -> Any:
    from leadscore.model.gate import GatePolicy

    return GatePolicy(**{name: getattr(args, name) for _, name, _, _ in _GATE_FLAGS})
