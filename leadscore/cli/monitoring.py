"""``leadscore monitor`` and ``leadscore monitor report``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from leadscore.cli.common import say
from leadscore.settings import Settings


def register(sub: Any) -> None:
    mo = sub.add_parser(
        "monitor",
        help="online performance, drift and fairness of the models in production",
        description="Reads leads.scores (and leads.scores.shadow) with the CRM outcomes on "
        "leads.crm (and, for segments, the firmographics on leads.enrichment), samples "
        "scoring moments as training from events does (up to 6 per lead), "
        "labels them once the model's horizon has passed (converted within it or not), and "
        "every LEADSCORE_MONITOR_INTERVAL_S computes per model version: ROC AUC, PR AUC, "
        "Brier score, calibration error, conversion per tier and top-decile lift of the "
        "matured moments; an ESTIMATE of the AUC of the pending ones from their calibrated "
        "scores; drift of every feature and of the score against the model's training "
        "reference (from the workers' bin counters, LEADSCORE_MONITOR_SCRAPE); fairness per "
        "segment (LEADSCORE_MONITOR_SEGMENTS). Serves them on /metrics "
        "(LEADSCORE_MONITOR_PORT, default 6067) and writes them to "
        "LEADSCORE_MONITOR_STATE_DIR (state and report.json). Run one per deployment.",
    )
    mo.add_argument(
        "--max-seconds", type=float, help="stop after this many seconds (default: run until Ctrl-C)"
    )
    mo.set_defaults(func=cmd_monitor)
    msub = mo.add_subparsers(dest="monitor_command", metavar="SUBCOMMAND")
    rp = msub.add_parser(
        "report",
        help="the monitor's latest figures (text; --json; --html FILE)",
        description="Reads the report the running (or last) monitor wrote to "
        "LEADSCORE_MONITOR_STATE_DIR.",
    )
    fmt = rp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the whole report as JSON")
    fmt.add_argument(
        "--html",
        metavar="FILE",
        type=Path,
        help="write one self-contained HTML page with plots over time",
    )
    rp.set_defaults(func=cmd_report)


def cmd_monitor(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.monitor.service import run_monitor

    run_monitor(settings, max_seconds=args.max_seconds, progress=say)
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.monitor.report import load_report, text, to_html, to_json

    report = load_report(settings.monitor_state_dir)
    if args.json:
        print(to_json(report))
    elif args.html is not None:
        args.html.write_text(to_html(report), encoding="utf-8")
        say(f"wrote {args.html}")
    else:
        print(text(report))
    return 0
