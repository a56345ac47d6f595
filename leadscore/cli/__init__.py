"""The ``leadscore`` command line: one module per command group, each calling a library
function. Results go to stdout, progress and errors to stderr.

Exit codes: 0 done; 1 the command failed (one line on stderr says why); 2 the command line
was wrong; 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence

from leadscore import __version__
from leadscore.cli import (
    api,
    backup,
    capacity,
    data,
    learning,
    models,
    monitoring,
    ops,
    privacy,
    retention,
    tools,
    worker,
)
from leadscore.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, parse_duration_ms, say
from leadscore.errors import LeadscoreError
from leadscore.settings import Settings, load_settings

__all__ = ["build_parser", "main", "parse_duration_ms"]

EPILOG = """exit codes: 0 done, 1 the command failed (the message says why), 2 wrong usage,
130 interrupted. Settings come from LEADSCORE_* environment variables (see README)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="leadscore",
        description="Real-time lead scoring: Kafka events -> Redis features -> LightGBM scores.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    p.add_argument("--version", action="version", version=f"leadscore {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (
        tools,
        capacity,
        worker,
        api,
        data,
        models,
        learning,
        ops,
        privacy,
        backup,
        retention,
        monitoring,
    ):
        group.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    try:
        return func(args, load_settings())
    except LeadscoreError as exc:
        say(f"leadscore: error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        say("leadscore: interrupted")
        return EXIT_INTERRUPTED
