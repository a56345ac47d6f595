"""Progress of long work (simulate, replay, bench) on stderr."""

from __future__ import annotations

import sys
import time
from typing import Any


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
