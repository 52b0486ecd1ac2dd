"""Per-account state: plain ints, floats and lists, so it copies cheaply and
serialises compactly (orjson) into a changelog-backed table.

The keys are short because there is one of these per account in the table and
in its changelog; :data:`FIELDS` spells each one out.
"""
from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from .featurespec import FeatureSpec, default_spec
from .velocity import COUNTERS
from .vocabulary import STATES

__all__ = [
    "AccountState", "Instalment", "FIELDS", "new_state", "copy_state", "upgrade",
    "I_ID", "I_DUE_TS", "I_AMOUNT", "I_PAID", "I_MISSED", "I_LABELLED", "I_SCORE", "I_X",
]

# An open instalment, kept compact as a list; its fields by position:
I_ID = 0  # instalment_id
I_DUE_TS = 1  # due date (event time, ms)
I_AMOUNT = 2  # amount due (minor units)
I_PAID = 3  # paid towards it so far (minor units)
I_MISSED = 4  # 1 once the due date passed without full payment (counted once)
I_LABELLED = 5  # 1 once its outcome was learned (good or bad)
I_SCORE = 6  # the model's score at the statement (None: the model was not warm)
I_X = 7  # the feature values at the statement, kept until the outcome is known (point-in-time learning)
Instalment = list[Any]

FIELDS = {
    "id": "account id",
    "cur": "currency of the line",
    "opened": "event time the line opened (ms)",
    "limit": "contractual credit limit (minor units)",
    "cap": "limit in force after this monitor's actions (minor units)",
    "bal": "drawn balance (minor units)",
    "ts": "account clock: latest event time applied (ms)",
    "inst": "open instalments (see Instalment)",
    "rdpd": "days past due last reported by the servicing ledger",
    "rts": "event time of that report (ms)",
    "dpd": "current days past due",
    "max_dpd": "worst days past due seen",
    "late": "instalments settled after their due date",
    "missed": "instalments whose due date passed unpaid in full",
    "partial": "instalments partly paid when their due date passed",
    "on_time": "instalments settled by their due date",
    "streak": "consecutive instalments settled on time",
    "last_ok": "event time of the last on-time settlement (ms)",
    "v": "time-decayed counters, layout in models.velocity.COUNTERS",
    "status": "early-warning state (models.vocabulary.STATES)",
    "since": "event time of the last state change (ms)",
    "good": "on-time settlements since the last escalation",
    "score": "latest probability of default",
    "ids": "hashes of the most recent event ids (duplicate deliveries)",
    "n": "events applied",
    "hold": "present while a tripped breaker holds a move: [target status, event time held (ms), held decision id]",
    "a": "the feature specification's aggregates (models.featurespec: layout by the spec)",
    "fs": "fingerprint of the specification whose layout 'a' follows (another one starts 'a' afresh)",
    "cb": "balance of the linked current account (minor units, negative when overdrawn); null until known",
    "line": "1 once the credit line is open; 0 for a current account whose line has not opened yet",
    "pend": "instalments paid in good time whose outcome waits for the end of their performance window: "
            "[due date (ms), score at the statement, features at the statement]",
}


class AccountState(TypedDict):
    id: str
    cur: str
    opened: int
    limit: int
    cap: int
    bal: int
    ts: int
    inst: list[Instalment]
    rdpd: int
    rts: int
    dpd: int
    max_dpd: int
    late: int
    missed: int
    partial: int
    on_time: int
    streak: int
    last_ok: int
    v: list[float]
    status: str
    since: int
    good: int
    score: float
    ids: list[int]
    n: int
    a: list[Any]
    fs: int
    cb: float | None
    line: int
    hold: NotRequired[list[Any]]
    # A reviewer's decision in force (riskmon.models.step._review): [until (event time), the state it set,
    # missed instalments then, arrears bucket then]; gone once it lapses or the arrears grow.
    rv: NotRequired[list[Any]]
    # Good outcomes waiting to be learned (riskmon.models.step._age): a bad one is known only once its
    # instalment is bad_dpd days late, so a good one is held until then too, and the model learns each
    # statement cohort whole rather than its good half a month early.
    pend: NotRequired[list[list[Any]]]
    # While a candidate policy is in shadow (riskmon.models.shadow): the state it would have the line in,
    # which nothing live reads.
    sh: NotRequired[list[Any]]


def new_state(account_id: str, currency: str, opened_ts: int, limit: int, spec: FeatureSpec | None = None,
              line: bool = True) -> AccountState:
    """The state of a line that has just opened (``line=False``: a current account whose line has not)."""
    return AccountState(
        id=account_id, cur=currency, opened=opened_ts, limit=limit, cap=limit, bal=0,
        ts=opened_ts, inst=[], rdpd=0, rts=opened_ts, dpd=0, max_dpd=0, late=0,
        missed=0, partial=0, on_time=0, streak=0, last_ok=opened_ts,
        v=[0.0] * len(COUNTERS), status=STATES[0].name, since=opened_ts, good=0,
        score=0.0, ids=[], n=0, a=(spec or default_spec()).new_state(), fs=(spec or default_spec()).fingerprint,
        cb=None, line=1 if line else 0,
    )


def upgrade(s: AccountState, spec: FeatureSpec) -> AccountState:
    """A state saved before the declared features, or under another specification: its aggregates start
    afresh (they rebuild over their windows); everything else is kept. ``s`` itself is not changed."""
    c = copy_state(s) if "a" in s else AccountState(**{**s, "a": []})
    c["a"] = spec.new_state()
    c["fs"] = spec.fingerprint
    c.setdefault("cb", None)
    c.setdefault("line", 1)
    return c


def copy_state(s: AccountState) -> AccountState:
    """A copy deep enough that the step function never mutates its input (unless the caller gives it up)."""
    c = s.copy()
    c["inst"] = [list(i) for i in s["inst"]]
    c["v"] = list(s["v"])
    c["ids"] = list(s["ids"])
    c["a"] = list(s["a"])
    if "pend" in s:
        c["pend"] = list(s["pend"])
    return c
