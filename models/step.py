"""The step function: (account state, event) -> (new state, decisions, outcomes).

Pure: the state passed in is never mutated, time is the event's, and the model
is only read (learning on the outcomes returned is the caller's next move, see
:class:`models.monitor.Monitor`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .breaker import Breaker
from .codec import format_ts
from .decisions import Decision, Reason, decision_id
from .dpd import DAY_MS, days_between
from .early_warning import action_for, next_state, score_drivers
from .errors import RejectReason, Rejected
from .events import AccountEvent, AccountOpened, BreakerCommand, DpdReport, InstalmentDue, LimitChanged, Payment, Transaction
from .features import FEATURE_NAMES, features, rounded
from .policy import Policy
from .risk_model import RiskModel
from .state import SEVERITY, AccountState, Instalment, copy_state, new_state
from .velocity import INDEX, decay

__all__ = ["Context", "Outcome", "StepResult", "step", "resolve_hold", "event_hash", "RECENT_IDS", "MAX_OPEN_INSTALMENTS"]

RECENT_IDS = 16
MAX_OPEN_INSTALMENTS = 12
# Amounts left unpaid below this (minor units) count as settled: no line is
# declared delinquent over a rounding remainder.
SETTLE_TOLERANCE = 100

_I_DD = (INDEX["drawdowns_1h"], INDEX["drawdowns_24h"], INDEX["drawdowns_30d"])
_I_LR = (INDEX["limit_requests_24h"], INDEX["limit_requests_30d"])
_I_AMT, _I_DUE, _I_PAID, _I_LATE = INDEX["drawdown_amount_30d"], INDEX["due_90d"], INDEX["paid_90d"], INDEX["late_180d"]
_I_PAID30 = INDEX["paid_30d"]


@dataclass(frozen=True, slots=True)
class Context:
    """What a step reads besides the state and the event."""

    policy: Policy
    model: RiskModel
    model_version: str
    model_ready: bool
    bad_dpd: int = 30  # an instalment this many days past due is a bad outcome
    breaker: Breaker | None = None  # the shard's mass-action breaker (None: no guard)
    open_accounts: int = 0  # the shard's accounts not closed, for the breaker's share rule


@dataclass(frozen=True, slots=True)
class Outcome:
    """A delayed label: the features and score at the statement, and what came of it.

    ``score`` is None when the model was not yet warm at the statement (it had
    learned fewer outcomes than the policy's ``score.min_labels``): such a score
    was never acted on, so it is learned from but not graded.
    """

    features: list[float]
    score: float | None
    default: bool


@dataclass(slots=True)
class StepResult:
    state: AccountState
    decisions: list[Decision] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    duplicate: bool = False
    model_ready: bool = False


def event_hash(event_id: str) -> int:
    """A 63-bit fingerprint of an event id, kept to spot duplicate deliveries."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big") >> 1


def step(state: AccountState | None, event: AccountEvent, ctx: Context) -> StepResult:
    """Apply one account event. Raises :class:`Rejected` for events the account cannot take."""
    h = event_hash(event.event_id)
    if state is None:
        if not isinstance(event, AccountOpened):
            raise Rejected(RejectReason.UNKNOWN_ACCOUNT, f"{event.type} for account {event.account_id!r}, which never opened")
        s = new_state(event.account_id, event.currency, event.ts, event.limit)
    else:
        if h in state["ids"]:
            return StepResult(state, duplicate=True)
        if isinstance(event, AccountOpened):
            raise Rejected(RejectReason.ACCOUNT_EXISTS, f"account {event.account_id!r} is already open")
        currency = getattr(event, "currency", None)
        if currency is not None and currency != state["cur"]:
            raise Rejected(RejectReason.CURRENCY_MISMATCH, f"{event.type} in {currency}, the line is in {state['cur']}")
        s = copy_state(state)
        # Events may arrive a little out of order; the account clock never runs back.
        if event.ts > s["ts"]:
            decay(s["v"], event.ts - s["ts"])
            s["ts"] = event.ts
    now = s["ts"]
    s["ids"].append(h)
    if len(s["ids"]) > RECENT_IDS:
        del s["ids"][0]
    s["n"] += 1
    result = StepResult(s, model_ready=ctx.model_ready)

    _book(s, event, ctx, result)
    _age(s, ctx, result)
    x = features(s)
    if isinstance(event, InstalmentDue):
        x = rounded(x)  # kept for learning: score exactly what is kept
    score = ctx.model.score_vector(FEATURE_NAMES, x)
    s["score"] = score
    if isinstance(event, InstalmentDue):
        # The prediction made at the statement is the one its outcome will grade.
        s["inst"][-1][6] = round(score, 6) if ctx.model_ready else None
        s["inst"][-1][7] = x

    move = next_state(ctx.policy, s, score, ctx.model_ready)
    if move is not None:
        new, reasons = move
        prev = s["status"]
        action = action_for(prev, new)
        hold = s.get("hold")
        if ctx.breaker is not None and ctx.breaker.guards(ctx.policy, action):
            if hold is not None and SEVERITY[hold[0]] >= SEVERITY[new]:
                return result  # already held for review: nothing new to say
            why = ctx.breaker.admit(ctx.policy, action, now, ctx.open_accounts)
            if why is not None:
                did = decision_id(s["id"], event.event_id, "held", new)
                s["hold"] = [new, now, did]
                result.decisions.append(Decision(
                    did, s["id"], "held", prev, new, score, (why, *reasons), ctx.model_version, ctx.policy.version,
                    event.event_id, event.ts, s["limit"], s["cap"],
                ))
                return result
        if hold is not None:
            del s["hold"]  # a later move supersedes the held one
        if ctx.model_ready and SEVERITY[new] > SEVERITY[prev]:
            reasons = reasons + score_drivers(ctx.model.contributions(dict(zip(FEATURE_NAMES, x))))
            s["good"] = 0
        s["status"], s["since"] = new, now
        _set_cap(s, new, ctx.policy)
        result.decisions.append(Decision(
            decision_id(s["id"], event.event_id, action, new), s["id"], action, prev, new, score,
            tuple(reasons), ctx.model_version, ctx.policy.version, event.event_id, event.ts,
            s["limit"], s["cap"],
        ))
    return result


def resolve_hold(state: AccountState, cmd: BreakerCommand, ctx: Context) -> StepResult:
    """Release (apply) or drop the move a breaker held on this account; the breaker re-arms elsewhere."""
    s = copy_state(state)
    result = StepResult(s, model_ready=ctx.model_ready)
    hold = s.pop("hold", None)
    if hold is None:
        return result
    target, held_ts, held_id = hold
    prev = s["status"]
    note = f": {cmd.note}" if cmd.note else ""
    if cmd.command == "release" and SEVERITY[target] > SEVERITY[prev]:
        action = action_for(prev, target)
        why = Reason("BREAKER_RELEASED", f"{action} held at {format_ts(held_ts)} (decision {held_id}) released by {cmd.event_id}{note}", 5)
        s["status"], s["since"], s["good"] = target, max(s["ts"], cmd.ts), 0
        _set_cap(s, target, ctx.policy)
        new = target
    else:
        action, new = "hold_dropped", prev
        why = Reason("BREAKER_DROPPED", f"{target} held at {format_ts(held_ts)} (decision {held_id}) dropped by {cmd.event_id}{note}", 0)
    result.decisions.append(Decision(
        decision_id(s["id"], cmd.event_id, action, new), s["id"], action, prev, new, s["score"], (why,),
        ctx.model_version, ctx.policy.version, cmd.event_id, cmd.ts, s["limit"], s["cap"],
    ))
    return result


def _book(s: AccountState, e: AccountEvent, ctx: Context, r: StepResult) -> None:
    """The ledger effect of the event itself."""
    v = s["v"]
    if isinstance(e, Transaction):
        if e.type in ("drawdown", "purchase"):
            s["bal"] += e.amount
            for i in _I_DD:
                v[i] += 1.0
            v[_I_AMT] += e.amount
        elif e.type == "refund":
            s["bal"] = max(0, s["bal"] - e.amount)
        else:  # limit_request
            for i in _I_LR:
                v[i] += 1.0
    elif isinstance(e, InstalmentDue):
        s["inst"].append([e.instalment_id, e.due_ts, e.amount, 0, 0, 0, None, None])
        if len(s["inst"]) > MAX_OPEN_INSTALMENTS:
            # Only long-delinquent lines get here, and their old instalments are
            # long labelled: fold the two oldest into one.
            a, b = s["inst"][0], s["inst"].pop(1)
            a[2] += b[2]
            a[3] += b[3]
            a[4] = max(a[4], b[4])
            a[5] = 1
            a[7] = None
    elif isinstance(e, Payment):
        s["bal"] = max(0, s["bal"] - e.amount)
        v[_I_PAID30] += e.amount
        _allocate(s, e.amount, e.ts, r)
    elif isinstance(e, DpdReport):
        s["rdpd"], s["rts"] = e.days_past_due, e.ts
        if e.days_past_due == 0:
            # The ledger is authoritative: an account it reports current after a
            # due date met that instalment (its minimum), whatever our own
            # booking of payments says.
            keep = []
            for inst in s["inst"]:
                if inst[1] <= e.ts:
                    _settle(s, inst, inst[1] - 1, r)
                else:
                    keep.append(inst)
            s["inst"] = keep
    elif isinstance(e, LimitChanged):
        s["limit"] = e.limit
        s["cap"] = e.limit if SEVERITY[s["status"]] < SEVERITY["limit_reduced"] else min(s["cap"], e.limit)


def _allocate(s: AccountState, amount: int, ts: int, r: StepResult) -> None:
    """Pay the oldest open instalments first; settle those that are paid.

    The payment-to-due ratio counts an instalment once, when its due date
    passes or it is settled, whichever is first; payments on an instalment
    already past due count as they come.
    """
    left = amount
    keep = []
    for inst in s["inst"]:
        owed = inst[2] - inst[3]
        if left > 0 and owed > 0:
            pay = min(owed, left)
            inst[3] += pay
            left -= pay
            if inst[4]:
                s["v"][_I_PAID] += pay
        if inst[2] - inst[3] < SETTLE_TOLERANCE:
            _settle(s, inst, ts, r)
        else:
            keep.append(inst)
    s["inst"] = keep
    if not keep:
        s["rdpd"] = 0


def _settle(s: AccountState, inst: Instalment, ts: int, r: StepResult) -> None:
    if not inst[4]:
        s["v"][_I_DUE] += inst[2]
        s["v"][_I_PAID] += inst[3]
    if ts < inst[1]:
        s["on_time"] += 1
        s["streak"] += 1
        s["good"] += 1
        s["last_ok"] = ts
    else:
        s["late"] += 1
    if not inst[5] and inst[7] is not None:
        # Settled before it reached the bad-outcome DPD: a good outcome.
        r.outcomes.append(Outcome(inst[7], inst[6], False))


def _age(s: AccountState, ctx: Context, r: StepResult) -> None:
    """Pass due dates at the account clock: count misses, label bad outcomes, compute DPD."""
    now = s["ts"]
    worst = 0
    for inst in s["inst"]:
        if now < inst[1]:
            continue
        days = days_between(inst[1], now) + 1
        worst = max(worst, days)
        if not inst[4]:
            inst[4] = 1
            s["v"][_I_DUE] += inst[2]
            s["v"][_I_PAID] += inst[3]
            s["missed"] += 1
            s["partial"] += 1 if inst[3] > 0 else 0
            s["streak"] = 0
            s["good"] = 0
            s["v"][_I_LATE] += 1.0
        if not inst[5] and days >= ctx.bad_dpd:
            inst[5] = 1
            if inst[7] is not None:
                r.outcomes.append(Outcome(inst[7], inst[6], True))
            inst[7] = None
    reported = s["rdpd"] + (now - s["rts"]) // DAY_MS if s["rdpd"] > 0 else 0
    s["dpd"] = max(worst, reported)
    s["max_dpd"] = max(s["max_dpd"], s["dpd"])


def _set_cap(s: AccountState, status: str, p: Policy) -> None:
    """What the line may be drawn to after the monitor's action."""
    limit = s["limit"]
    if status in ("normal", "watch"):
        s["cap"] = limit
    elif status == "limit_reduced":
        floor = int(limit * p.thresholds["recovery.limit_reduction_floor"])
        s["cap"] = min(limit, max(s["bal"], floor))
    elif status == "frozen":
        s["cap"] = min(limit, s["bal"])
    else:
        s["cap"] = 0


