"""The garbage collector's thresholds for riskmon's processes (every `riskmon` command sets them).

Per event the core allocates a handful of short-lived containers (the event, the account state's
new copy, its vector, the decisions), almost none of them in reference cycles, beside a large heap
of account states that lives for the whole run. At CPython's default, a young-generation
collection every 700 net container allocations, the collector ran every few dozen events, and its
older generations walked the growing heap of states again and again. A young generation of 50,000
lets it run every few thousand events instead; what it still collects is the same, a little later.
"""
from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune_gc"]

YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect less often (see the module's docstring); the older generations keep CPython's ratios.

    >>> tune_gc(); gc.get_threshold()[0] == YOUNG_THRESHOLD
    True
    """
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
