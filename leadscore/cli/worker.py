"""``leadscore worker``."""

from __future__ import annotations

import argparse
from typing import Any

from leadscore.settings import Settings


def register(sub: Any) -> None:
    w = sub.add_parser(
        "worker",
        help="the Faust worker (agents + web server)",
        description="Consumes leads.web/email/crm/social/enrichment, scores every event, "
        "publishes to leads.scores (bad input to leads.dlq, tier changes to leads.alerts). "
        "Web: /health "
        "/ready /metrics only (lead lookups and POST /score are served by `leadscore api`). "
        "If its agent dies it exits non-zero "
        "for a supervisor to restart it; SIGTERM stops it within LEADSCORE_SHUTDOWN_TIMEOUT_S.",
    )
    w.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.streamer.worker import run_worker

    return run_worker(settings)
