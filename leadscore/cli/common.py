"""What every command shares: output, argument types, exit codes."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import orjson

from leadscore.schemas import SOURCES, Source

#: Exit codes: 0 done; 1 the command failed (a message says why); 2 the command line was
#: wrong (argparse's usage error). 130 after Ctrl-C.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """argparse type: ``30d``, ``12h``, ``90m``, ``45s`` -> milliseconds.

    >>> parse_duration_ms("30d")
    2592000000
    >>> parse_duration_ms("1.5h")
    5400000
    """
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30d, 12h or 90m")
    return int(float(m.group(1)) * _UNIT_MS[m.group(2)])


def timestamp_ms(text: str) -> int:
    """argparse type: an RFC 3339 moment (``2026-12-06T00:00:00Z``) or a date (UTC midnight)
    -> epoch milliseconds.

    >>> timestamp_ms("2026-12-06")
    1796515200000
    """
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (2026-12-06) or an RFC 3339 moment"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def count(text: str) -> int:
    """argparse type: a whole number, 0 or more.

    >>> count("5")
    5
    """
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (a whole number, 0 or more)")
    return n


def source_list(text: str) -> tuple[Source, ...]:
    """argparse type: comma-separated event sources -> those sources, in ``SOURCES`` order.

    >>> source_list("crm, web")
    ('web', 'crm')
    """
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in SOURCES]
    if unknown or not names:
        what = f"unknown source(s) {', '.join(unknown)}" if unknown else "no source"
        raise argparse.ArgumentTypeError(
            f"{text!r} names {what}: give a comma-separated list of {', '.join(SOURCES)}"
        )
    return tuple(s for s in SOURCES if s in names)


def say(msg: str) -> None:
    """Progress and errors go to stderr; results to stdout."""
    print(msg, file=sys.stderr, flush=True)


def emit(obj: Any) -> None:
    """One result as one JSON line on stdout."""
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
    sys.stdout.flush()
