"""The model's view of an account: a fixed vector of named features.

A vector kept for delayed learning (at a statement) is rounded to 4 decimals
to keep the state small, and that rounded vector is the one scored, so the
model later learns on exactly what it scored.
"""
from __future__ import annotations

import math

from .state import I_AMOUNT, I_DUE_TS, I_PAID, AccountState
from .units import MONTH_MS
from .velocity import INDEX

__all__ = ["FEATURE_NAMES", "FEATURE_TEXT", "features", "rounded"]

# Every feature, named once, with how a reason code says it: the order is the vector's layout.
FEATURE_TEXT = {
    "utilisation": "utilisation of the limit",
    "dpd_months": "days past due",
    "max_dpd_months": "worst days past due",
    "in_arrears": "being in arrears",
    "arrears_over_30": "arrears over 30 days",
    "late_payments": "late payments",
    "missed_instalments": "missed instalments",
    "partial_payments": "partial payments",
    "on_time_payments": "few on-time payments",
    "on_time_streak": "a short on-time streak",
    "payment_to_due": "a low payment-to-due ratio",
    "months_since_on_time": "time since the last on-time payment",
    "drawdowns_1h": "drawdowns in the last hour",
    "drawdowns_24h": "drawdowns in the last day",
    "drawdowns_30d": "drawdowns in the last month",
    "limit_requests_24h": "limit requests in the last day",
    "limit_requests_30d": "limit requests in the last month",
    "drawdown_amount_to_limit": "amount drawn this month against the limit",
    "unpaid_due_to_limit": "unpaid amount due against the limit",
    "account_age_months": "a young account",
    "repaid_share_30d": "little of the balance repaid this month",
}
FEATURE_NAMES = tuple(FEATURE_TEXT)

_I_DD1, _I_DD24, _I_DD30 = INDEX["drawdowns_1h"], INDEX["drawdowns_24h"], INDEX["drawdowns_30d"]
_I_LR24, _I_LR30 = INDEX["limit_requests_24h"], INDEX["limit_requests_30d"]
_I_AMT, _I_DUE, _I_PAID = INDEX["drawdown_amount_30d"], INDEX["due_90d"], INDEX["paid_90d"]
_I_PAID30 = INDEX["paid_30d"]
_MONTH = MONTH_MS


def features(s: AccountState) -> dict[str, float]:
    """The features of ``s`` at its own clock, by name, in :data:`FEATURE_NAMES` order (a test holds them to it).

    >>> from riskmon.models.state import new_state
    >>> x = features(new_state("a1", "CNY", 0, 500_000))
    >>> tuple(x) == FEATURE_NAMES, x["utilisation"], x["payment_to_due"]
    (True, 0.0, 1.0)
    """
    limit = max(s["limit"], 1)
    v = s["v"]
    now = s["ts"]
    unpaid = 0
    for inst in s["inst"]:
        if inst[I_DUE_TS] <= now:
            unpaid += inst[I_AMOUNT] - inst[I_PAID]
    due = v[_I_DUE]
    return {
        "utilisation": min(s["bal"] / limit, 2.0),
        "dpd_months": min(s["dpd"] / 30, 6.0),
        "max_dpd_months": min(s["max_dpd"] / 30, 6.0),
        "in_arrears": 1.0 if s["dpd"] > 0 else 0.0,
        "arrears_over_30": 1.0 if s["dpd"] > 30 else 0.0,
        "late_payments": math.log1p(s["late"]),
        "missed_instalments": math.log1p(s["missed"]),
        "partial_payments": math.log1p(s["partial"]),
        "on_time_payments": math.log1p(s["on_time"]),
        "on_time_streak": min(s["streak"], 12) / 12,
        "payment_to_due": min(v[_I_PAID] / due, 2.0) if due > 1.0 else 1.0,
        "months_since_on_time": min((now - s["last_ok"]) / _MONTH, 12.0),
        "drawdowns_1h": math.log1p(v[_I_DD1]),
        "drawdowns_24h": math.log1p(v[_I_DD24]),
        "drawdowns_30d": math.log1p(v[_I_DD30]),
        "limit_requests_24h": math.log1p(v[_I_LR24]),
        "limit_requests_30d": math.log1p(v[_I_LR30]),
        "drawdown_amount_to_limit": min(v[_I_AMT] / limit, 5.0),
        "unpaid_due_to_limit": min(unpaid / limit, 2.0),
        "account_age_months": min((now - s["opened"]) / _MONTH, 24.0),
        # Of what was owed a month ago (now drawn + since repaid), the share repaid.
        "repaid_share_30d": v[_I_PAID30] / (s["bal"] + v[_I_PAID30]) if s["bal"] + v[_I_PAID30] > 100 else 1.0,
    }


def rounded(x: list[float]) -> list[float]:
    """The vector as it is kept in the state.

    >>> rounded([0.123456, 2.0])
    [0.1235, 2.0]
    """
    return [round(f, 4) for f in x]
