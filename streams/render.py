"""One line per decision, for people watching a terminal."""
from __future__ import annotations

from typing import Any

__all__ = ["decision_line"]


def decision_line(d: dict[str, Any]) -> str:
    """
    >>> decision_line({"event_ts": "2025-01-06T11:52:07Z", "account_id": "A1", "action": "warning",
    ...     "previous_state": "normal", "new_state": "watch", "score": 0.2424,
    ...     "reasons": [{"code": "DPD_1_30", "text": "3 days past due (1-30 bucket)"}]})
    '2025-01-06T11:52:07Z A1         warning          normal -> watch         PD 0.24  DPD_1_30: 3 days past due (1-30 bucket)'
    """
    first = d["reasons"][0] if d["reasons"] else {"code": "-", "text": ""}
    more = f" (+{len(d['reasons']) - 1} more)" if len(d["reasons"]) > 1 else ""
    return (
        f"{d['event_ts']} {d['account_id']:<10} {d['action']:<16} "
        f"{d['previous_state'] + ' -> ' + d['new_state']:<23} PD {d['score']:.2f}  "
        f"{first['code']}: {first['text']}{more}"
    )
