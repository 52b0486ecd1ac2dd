"""One line per decision, for people watching a terminal."""
from __future__ import annotations

from typing import Any

__all__ = ["counted", "decision_line"]


def decision_line(d: dict[str, Any]) -> str:
    """
    >>> decision_line({"event_ts": "2025-01-06T11:52:07Z", "account_id": "A1", "action": "warning",
    ...     "previous_state": "normal", "new_state": "watch", "score": 0.2424,
    ...     "reasons": [{"code": "DPD_1_30", "text": "3 days past due (1-30 bucket)"}]})
    '2025-01-06T11:52:07Z     A1         warning          normal -> watch         PD 0.24  DPD_1_30: 3 days past due (1-30 bucket)'

    The time takes 24 columns with or without milliseconds, so the columns after it line up.
    """
    first = d["reasons"][0] if d["reasons"] else {"code": "-", "text": ""}
    more = f" (+{len(d['reasons']) - 1} more)" if len(d["reasons"]) > 1 else ""
    return (
        f"{d['event_ts']:<24} {d['account_id']:<10} {d['action']:<16} "
        f"{d['previous_state'] + ' -> ' + d['new_state']:<23} PD {d['score']:.2f}  "
        f"{first['code']}: {first['text']}{more}"
    )


def counted(n: int, one: str, many: str | None = None) -> str:
    """``n`` things, in words.

    >>> counted(1, "decision"), counted(0, "repeated delivery", "repeated deliveries")
    ('1 decision', '0 repeated deliveries')
    """
    return f"{n} {one if n == 1 else many or one + 's'}"
