"""The monitor's vocabulary in one table: the states a line can be in, and what moving into each means.

Every other list of states, actions and severities (the state machine, the
decision schema, the breaker, the metrics, the evaluation, the report) is
derived from :data:`STATES`. Adding a state and its action is one row here;
``python -m riskmon.models.contract`` then rewrites the enums of the published
JSON Schemas (a test fails until it has), and a guardable action needs its
``breaker.<action>`` switch in the policy (a test names it).

A row's position is its severity: a line escalates at once to the most severe
state any rule calls for, and steps down only when every rule is quiet.

>>> [s.name for s in STATES]
['normal', 'watch', 'limit_reduced', 'frozen', 'closed']
>>> action_for("normal", "frozen"), action_for("closed", "watch"), action_for("watch", "normal")
('freeze', 'reopen', 'clear')
>>> ACTIONS
('warning', 'limit_reduction', 'freeze', 'closure', 'reopen', 'clear', 'held', 'hold_dropped', 'reviewed')
>>> GUARDABLE, HOLD_ACTION["closed"]
(('closure', 'limit_reduction'), 'closure')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ACTIONS", "BREAKER_ACTIONS", "Cap", "ESCALATION", "GUARDABLE", "HOLD_ACTION", "LEARNERS", "LineState", "POLICY_ACTIONS",
    "REVIEWED", "SEVERITY", "STATES", "STATUSES", "STATE_OF_ACTION", "action_for", "cap_for",
]

# What a state does to the limit in force (the decision's ``limit_cap``):
#   limit: the contractual limit; reduced: what is drawn, or the policy's floor share of the limit if
#   more; balance: what is drawn (no new drawdowns); zero: nothing (the line is closed).
Cap = Literal["limit", "reduced", "balance", "zero"]


@dataclass(frozen=True, slots=True)
class LineState:
    name: str  # the early-warning state (AccountState["status"], a decision's new_state)
    escalation: str | None  # the decision's action when a line moves up into this state
    leave: str | None  # the decision's action when a line steps down out of it
    cap: Cap
    guardable: bool  # the mass-action breaker may hold the escalation (when the policy's breaker.<action> is 1)
    colour: str  # how the report draws the state and its escalation


STATES = (
    LineState("normal", None, None, "limit", False, "#2f9e44"),
    LineState("watch", "warning", "clear", "limit", False, "#e0a100"),
    LineState("limit_reduced", "limit_reduction", "clear", "reduced", True, "#e8590c"),
    LineState("frozen", "freeze", "reopen", "balance", False, "#1c7ed6"),
    LineState("closed", "closure", "reopen", "zero", True, "#c92a2a"),
)

# A tripped breaker holds a move for review ("held"); a release then gives the move's own action, a drop this.
BREAKER_ACTIONS = ("held", "hold_dropped")
# A reviewer's decision that leaves the line where it is (one that moves it takes the move's own action).
REVIEWED = "reviewed"

STATUSES = tuple(s.name for s in STATES)
SEVERITY = {s.name: i for i, s in enumerate(STATES)}
ESCALATION = {i: s.escalation for i, s in enumerate(STATES) if s.escalation is not None}
STATE_OF_ACTION = {s.escalation: s.name for s in STATES if s.escalation is not None}
POLICY_ACTIONS = tuple(ESCALATION.values()) + tuple(dict.fromkeys(s.leave for s in reversed(STATES) if s.leave))
ACTIONS = POLICY_ACTIONS + BREAKER_ACTIONS + (REVIEWED,)
# Most severe first: the order a person reads them in (and the codec's error message).
GUARDABLE = tuple(s.escalation for s in reversed(STATES) if s.guardable and s.escalation)
HOLD_ACTION = {s.name: s.escalation for s in STATES if s.guardable and s.escalation}


def action_for(previous: str, new: str) -> str:
    """The decision's action for a move between two different states."""
    a, b = SEVERITY[previous], SEVERITY[new]
    row = STATES[b] if b > a else STATES[a]
    action = row.escalation if b > a else row.leave
    assert action is not None, f"no action moves a line from {previous} to {new}"
    return action


def cap_for(status: str, limit: int, balance: int, floor_share: float) -> int:
    """The limit in force for a line in ``status``.

    >>> cap_for("watch", 500, 200, 0.0), cap_for("limit_reduced", 500, 200, 0.5), cap_for("frozen", 500, 200, 0.0)
    (500, 250, 200)
    """
    cap = STATES[SEVERITY[status]].cap
    if cap == "limit":
        return limit
    if cap == "reduced":
        return min(limit, max(balance, int(limit * floor_share)))
    if cap == "balance":
        return min(limit, balance)
    return 0

# The learned model (riskmon.models.risk_model.RiskModel's ``learner``): online logistic regression, a
# mini-batch logistic regression refitted on the latest outcomes, or an online tree (Hoeffding adaptive).
LEARNERS = ("logistic", "batch", "tree")
