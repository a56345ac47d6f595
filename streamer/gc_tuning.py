"""Garbage-collector settings for the long-running worker.

Python's cyclic collector runs a young-generation pass every 700 container allocations, and
each pass walks every object that survived the previous ones. The worker allocates dozens of
short-lived dicts, lists and tuples per event (records, reasons, Faust events), which reference
counting already frees, so those passes find almost nothing; meanwhile the heap holds several
hundred thousand long-lived objects from start-up (Faust, aiokafka, numpy, scipy, the model)
that a full pass walks every time.

``tune`` moves everything alive at start-up to the permanent generation (``gc.freeze``), so no
pass walks it again, and makes young passes rarer. Cycles are still collected, in bigger
batches. The effect on the worker's CPU per event is in docs/performance.md.
"""

from __future__ import annotations

import gc

#: Container allocations between young-generation passes (Python's default: 700).
GEN0_THRESHOLD = 50_000


def tune(gen0: int = GEN0_THRESHOLD) -> None:
    """Freeze the start-up heap and space out young passes; ``gen0 <= 0`` changes nothing."""
    if gen0 <= 0:
        return
    # Collect first, so start-up garbage isn't frozen with the live objects.
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
