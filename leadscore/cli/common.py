"""What every command shares: output, argument types, exit codes."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import orjson

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


def say(msg: str) -> None:
    """Progress and errors go to stderr; results to stdout."""
    print(msg, file=sys.stderr, flush=True)


class Progress:
    """Progress of long work on stderr: on a terminal, one bar redrawn in place; otherwise
    (a log, a pipe, CI) a plain line at most every ``every_s`` seconds, so logs stay short.

    >>> import io
    >>> out = io.StringIO()
    >>> p = Progress("sent", total=4000, stream=out, tty=False, every_s=0)
    >>> p(1000); p(4000); p.close()
    >>> print(out.getvalue().strip())
    sent 1,000/4,000 (25%)
    sent 4,000/4,000 (100%)
    """

    WIDTH = 30

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        stream: Any = None,
        tty: bool | None = None,
        every_s: float = 5.0,
    ) -> None:
        import time

        self._time = time.monotonic
        self.label, self.total = label, total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s
        self.start = self._time()
        self._last = float("-inf")
        self._drawn = False

    def __call__(self, done: int) -> None:
        now = self._time()
        if not self.tty and now - self._last < self.every_s and done != self.total:
            return
        self._last = now
        if self.total:
            share = min(1.0, done / self.total)
            text = f"{self.label} {done:,}/{self.total:,} ({share:.0%})"
        else:
            share, text = 0.0, f"{self.label} {done:,}"
        if not self.tty:
            self.stream.write(text + "\n")
            self.stream.flush()
            return
        rate = done / max(now - self.start, 1e-9)
        bar = "#" * int(share * self.WIDTH) if self.total else ""
        shown = f"[{bar:<{self.WIDTH}}] " if self.total else ""
        self.stream.write(f"\r{shown}{text} {rate:,.0f}/s\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line (on a terminal), so the next message starts on its own."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def emit(obj: Any) -> None:
    """One result as one JSON line on stdout."""
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
    sys.stdout.flush()
