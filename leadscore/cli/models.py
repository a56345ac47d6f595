"""``leadscore train``, ``predict``, ``models``: training, batch scoring, the registry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from leadscore.cli.common import count, emit, parse_duration_ms, say
from leadscore.errors import LeadscoreError
from leadscore.settings import Settings


def register(sub: Any) -> None:
    t = sub.add_parser(
        "train",
        help="train a model from an event history or a CRM table",
        description="--events FILE: point-in-time features, labels from CRM outcomes."
        " --data FILE --target COL: a CSV/Parquet export with a yes/no-like target.",
    )
    t.add_argument("--events", help="JSONL event history")
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
        "--time-budget",
        type=float,
        default=60.0,
        help="seconds for the hyper-parameter search (default 60)",
    )
    t.add_argument("--out", help="model registry directory (default LEADSCORE_MODEL_DIR)")
    t.add_argument("--no-promote", action="store_true", help="don't make it the champion")
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

    m = sub.add_parser(
        "models",
        help="the model registry: list, show VERSION, promote VERSION",
        description="promote makes VERSION the champion once it passes the checks a worker "
        "makes before loading it (checksums, meta.json, LightGBM loading it in a child "
        "process); running workers hot-swap to it.",
    )
    m.add_argument("action", choices=("list", "show", "promote"))
    m.add_argument("version", nargs="?")
    m.add_argument("--model-dir", help="registry directory (default LEADSCORE_MODEL_DIR)")
    m.set_defaults(func=cmd_models)


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    out_dir = Path(args.out) if args.out else settings.model_dir
    if args.events:
        from leadscore.jobs.train_events import train_from_events

        report = train_from_events(
            Path(args.events),
            horizon_ms=args.horizon,
            out_dir=out_dir,
            promote=not args.no_promote,
            progress=say,
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
            time_budget_s=args.time_budget,
            progress=say,
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

    reg = Registry(Path(args.model_dir) if args.model_dir else settings.model_dir)
    if args.action == "list":
        versions = reg.list()
        if not versions:
            say(f"no models in {reg.root}; train one with `leadscore train`")
        for v in versions:
            auc = (v.meta.get("metrics", {}).get("test") or {}).get("auc")
            auc_s = f"{auc:.4f}" if isinstance(auc, float) else "-"
            mark = "*" if v.champion else " "
            note = f"  unusable: {v.problem}" if v.problem else ""
            print(f"{mark} {v.version}  created {v.meta.get('created_at', '?')}  auc {auc_s}{note}")
        return 0
    if not args.version:
        raise LeadscoreError(f"`leadscore models {args.action}` needs a VERSION")
    if args.action == "show":
        emit(reg.meta(args.version))
        return 0
    reg.promote(args.version)
    say(f"{args.version} is now the champion in {reg.root}")
    return 0
