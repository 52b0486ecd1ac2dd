"""Event time is integer milliseconds since the Unix epoch (UTC); these are its units."""
from __future__ import annotations

__all__ = ["HOUR_MS", "DAY_MS", "MONTH_MS"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MONTH_MS = 30 * DAY_MS  # a credit month, as the features and their texts count it
