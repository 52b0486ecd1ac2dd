"""Time-decayed event counters: velocity over a window in O(1) state.

A counter with time constant ``tau`` holds ``sum(exp(-(now - t_i) / tau))`` over
past events: a burst of n events within much less than ``tau`` reads about n, and
the reading fades smoothly instead of dropping at a window's edge. All counters
of an account share one clock so that decaying them is one multiply each
(:meth:`riskmon.models.featurespec.FeatureSpec.advance` decays them with the
declared aggregates, one exponential per time constant).
"""
from __future__ import annotations

from .units import HOUR_MS

__all__ = ["TAUS_MS", "COUNTERS", "INDEX"]

# name -> time constant (ms). Order is the layout in the state's ``v`` list.
COUNTERS = (
    ("drawdowns_1h", HOUR_MS),
    ("drawdowns_24h", 24 * HOUR_MS),
    ("drawdowns_30d", 30 * 24 * HOUR_MS),
    ("limit_requests_24h", 24 * HOUR_MS),
    ("limit_requests_30d", 30 * 24 * HOUR_MS),
    ("drawdown_amount_30d", 30 * 24 * HOUR_MS),  # in minor units
    ("due_90d", 90 * 24 * HOUR_MS),  # minor units fallen due
    ("paid_90d", 90 * 24 * HOUR_MS),  # minor units paid
    ("late_180d", 180 * 24 * HOUR_MS),  # instalments missed or paid late
    ("paid_30d", 30 * 24 * HOUR_MS),  # minor units paid, whatever they were for
)
TAUS_MS = tuple(t for _, t in COUNTERS)
INDEX = {name: i for i, (name, _) in enumerate(COUNTERS)}
