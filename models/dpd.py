"""Days past due and the buckets risk teams report them in."""
from __future__ import annotations

from .units import DAY_MS

__all__ = ["BUCKETS", "bucket", "days_between"]

BUCKETS = ("current", "1-30", "31-60", "61-90", "90+")


def days_between(start_ms: int, end_ms: int) -> int:
    """Whole days from ``start_ms`` to ``end_ms`` (0 if end is not after start).

    >>> days_between(0, DAY_MS * 3 - 1), days_between(5, 0)
    (2, 0)
    """
    return max(0, (end_ms - start_ms) // DAY_MS)


def bucket(dpd: int) -> str:
    """The DPD bucket of ``dpd`` days.

    >>> [bucket(d) for d in (0, 1, 30, 31, 60, 61, 90, 91)]
    ['current', '1-30', '1-30', '31-60', '31-60', '61-90', '61-90', '90+']
    """
    if dpd <= 0:
        return BUCKETS[0]
    if dpd <= 30:
        return BUCKETS[1]
    if dpd <= 60:
        return BUCKETS[2]
    if dpd <= 90:
        return BUCKETS[3]
    return BUCKETS[4]
