"""The step function: (account state, event) -> (new state, decisions, outcomes).

The state passed in is never mutated (unless its caller gives it up: ``owned``), time is the event's, and the model is
only read (learning on the outcomes returned is the caller's next move, see
:class:`riskmon.models.monitor.Monitor`). One thing outside the account does
change: a move the mass-action breaker guards is counted in the shard's
breaker (``Context.breaker``), since whether it goes through depends on how many
came before it. Without a breaker the step is a pure function.
"""
from __future__ import annotations

from typing import Any
from dataclasses import dataclass, field

from .breaker import Breaker
from .codec import format_ts
from .decisions import Decision, Reason, decision_id
from .dpd import days_between
from .early_warning import next_state, score_drivers
from .errors import RejectReason, Rejected
from .events import (
    AccountEvent, AccountOpened, BalanceReport, BreakerCommand, CashFlow, DpdReport, InstalmentDue, LimitChanged, Payment,
    Review, Transaction,
)
from .features import rounded, vector
from .frozen import quick_init
from .featurespec import FeatureSpec, default_spec
from .policy import Policy
from .risk_model import RiskModel
from .state import (
    I_AMOUNT, I_DUE_TS, I_ID, I_LABELLED, I_MISSED, I_PAID, I_SCORE, I_X, AccountState, Instalment, copy_state,
    fingerprint, new_state, packed, remember, seen, unpacked, upgrade,
)
from .units import DAY_MS
from .velocity import INDEX
from .vocabulary import BREAKER_ACTIONS, REVIEWED, SEVERITY, STATES, action_for, cap_for

__all__ = ["Context", "Outcome", "StepResult", "step", "resolve_hold", "review_blocks", "review_in_force", "cap_on_new_limit", "decision",
           "MAX_OPEN_INSTALMENTS"]

MAX_OPEN_INSTALMENTS = 12
# Amounts left unpaid below this (minor units) count as settled: no line is
# declared delinquent over a rounding remainder.
SETTLE_TOLERANCE = 100

_I_DD = (INDEX["drawdowns_1h"], INDEX["drawdowns_24h"], INDEX["drawdowns_30d"])
_I_LR = (INDEX["limit_requests_24h"], INDEX["limit_requests_30d"])
_I_AMT, _I_DUE, _I_PAID, _I_LATE = INDEX["drawdown_amount_30d"], INDEX["due_90d"], INDEX["paid_90d"], INDEX["late_180d"]
_I_PAID30 = INDEX["paid_30d"]
HELD, HOLD_DROPPED = BREAKER_ACTIONS


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
    spec: FeatureSpec = field(default_factory=default_spec)  # the features the model sees


@quick_init
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
    """What one event did to one account.

    ``scored``: the account was scored (an account event applied; a breaker's
    settling of a held move only re-reads the last score). ``drift``: learning
    from this result's outcomes made the drift detector fire.
    """

    state: AccountState
    decisions: list[Decision] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    shadow: list[Decision] | None = None  # what a candidate policy in shadow would decide (riskmon.models.shadow)
    duplicate: bool = False
    model_ready: bool = False
    scored: bool = False
    drift: bool = False
    statement: list[float] | None = None  # at a statement: the features kept for its outcome (unpacked)


def step(state: AccountState | None, event: AccountEvent, ctx: Context, owned: bool = False) -> StepResult:
    """Apply one account event. Raises :class:`Rejected` for events the account cannot take (before any change).

    ``owned``: the caller gives ``state`` up (it keeps only the result's), so the step may change it in place
    instead of copying it first (replay, which holds every state itself; copying was a tenth of its time)."""
    h = fingerprint(event.event_id)
    spec = ctx.spec
    if state is None:
        if isinstance(event, AccountOpened):
            s = new_state(event.account_id, event.currency, event.ts, event.limit, spec)
        elif isinstance(event, (CashFlow, BalanceReport)):
            # The current account's history can come before its credit line: it builds the
            # account's cash-flow features, and the line opens with them in hand.
            s = new_state(event.account_id, event.currency, event.ts, 0, spec, line=False)
        else:
            raise Rejected(RejectReason.UNKNOWN_ACCOUNT, f"{event.type} for account {event.account_id!r}, which never opened")
    else:
        if seen(state["ids"], h):
            return StepResult(state, duplicate=True)
        state = _current(state, spec)
        if state["line"]:
            if isinstance(event, AccountOpened):
                raise Rejected(RejectReason.ACCOUNT_EXISTS, f"account {event.account_id!r} is already open")
        elif not isinstance(event, (CashFlow, BalanceReport, AccountOpened)):
            raise Rejected(RejectReason.UNKNOWN_ACCOUNT,
                           f"{event.type} for account {event.account_id!r}, whose credit line never opened")
        currency = getattr(event, "currency", None)
        if currency is not None and currency != state["cur"]:
            raise Rejected(RejectReason.CURRENCY_MISMATCH, f"{event.type} in {currency}, the line is in {state['cur']}")
        s = state if owned else copy_state(state)
        # Events may arrive a little out of order; the account clock never runs back.
        if event.ts > s["ts"]:
            elapsed = event.ts - s["ts"]
            spec.advance(s["a"], s["v"], elapsed, s["cb"], s["bal"], s["dpd"])
            s["ts"] = event.ts
    now = s["ts"]
    s["ids"] = remember(s["ids"], h)
    s["n"] += 1
    result = StepResult(s, model_ready=ctx.model_ready, scored=True)

    before, drawn = s["cb"], s["bal"]
    _book(s, event, ctx, result)
    spec.observe(s["a"], event, now, before, s["cb"], drawn, s["bal"])
    if not s["line"]:
        result.scored = False  # no line to judge yet: the history only feeds the features
        return result
    _age(s, ctx, result)
    x = vector(s, spec)
    if isinstance(event, InstalmentDue):
        x = rounded(x)  # kept for learning: score exactly what is kept
    score = ctx.model.score_vector(spec.names, x)
    s["score"] = score
    if isinstance(event, InstalmentDue):
        # The prediction made at the statement is the one its outcome will grade.
        s["inst"][-1][I_SCORE] = round(score, 6) if ctx.model_ready else None
        s["inst"][-1][I_X] = packed(x)
        result.statement = x

    if isinstance(event, Review):
        return _review(s, event, ctx, score, result)
    if "rv" in s and review_in_force(s) is None:
        del s["rv"]  # the reviewer's decision lapsed, or the arrears grew since
    move = next_state(ctx.policy, s, score, ctx.model_ready)
    if move is not None and review_blocks(s, move[0]):
        return result  # a reviewer set this line here: no automatic escalation beyond it for now
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
                held = decision(s, ctx, event.event_id, event.ts, HELD, prev, new, score, (why, *reasons))
                s["hold"] = [new, now, held.decision_id]
                result.decisions.append(held)
                return result
        if hold is not None:
            # A later move supersedes the held one: said as a hold_dropped, never lost silently.
            del s["hold"]
            target, held_ts, held_id = hold
            why = Reason("HOLD_SUPERSEDED", f"{target} held at {format_ts(held_ts)} (decision {held_id}) superseded "
                                            f"by a move to {new} at {format_ts(now)}", 0)
            result.decisions.append(decision(s, ctx, event.event_id, event.ts, HOLD_DROPPED, prev, prev, score, (why,)))
        if ctx.model_ready and SEVERITY[new] > SEVERITY[prev]:
            reasons = reasons + score_drivers(ctx.model.contributions_vector(spec.names, x), spec)
            s["good"] = 0
        s["status"], s["since"] = new, now
        _set_cap(s, new, ctx.policy)
        result.decisions.append(decision(s, ctx, event.event_id, event.ts, action, prev, new, score, tuple(reasons)))
    return result


def review_in_force(s: AccountState) -> list[Any] | None:
    """The reviewer's decision standing over the policy on this line at its clock (see :func:`_review`), if any."""
    rv = s.get("rv")
    if rv is None or s["ts"] >= rv[0] or _arrears(s) > (rv[2], rv[3]):
        return None
    return rv


def review_blocks(s: AccountState, target: str) -> bool:
    """Whether a reviewer's decision in force keeps the line from moving up to ``target`` automatically."""
    rv = review_in_force(s)
    return rv is not None and SEVERITY[target] > SEVERITY[rv[1]]


def _arrears(s: AccountState) -> tuple[int, int]:
    """How far behind a line is, coarsely: instalments missed, and its days-past-due bucket (0, 1-30, ..., 90+).
    Arrears that merely age within a bucket do not grow; another missed instalment or a worse bucket does."""
    return s["missed"], min((s["dpd"] + 29) // 30, 4)


def _review(s: AccountState, e: Review, ctx: Context, score: float, result: StepResult) -> StepResult:
    """A reviewer's decision on the line: reinstate (normal), hold at a state, or confirm where it is.

    Each stands over the policy for ``review.protect_days``: no automatic escalation beyond the
    state it leaves the line in, unless the arrears grow (:func:`_arrears`). A move the breaker held
    on the line is dropped: the reviewer has decided it (a confirmation keeps the line where it is,
    and the protection keeps the same move from being held again at the next event)."""
    now = s["ts"]
    prev = s["status"]
    target = prev if e.outcome == "confirm" else e.state
    hold = s.pop("hold", None)
    if hold is not None:
        why = Reason("HOLD_REVIEWED", f"{hold[0]} held at {format_ts(hold[1])} (decision {hold[2]}) settled by review "
                                      f"{e.event_id}", 0)
        result.decisions.append(decision(s, ctx, e.event_id, e.ts, HOLD_DROPPED, prev, prev, score, (why,)))
    days = ctx.policy.review.protect_days
    text = f"{e.outcome} ({target}) by {e.reviewer}" + (f": {e.note}" if e.note else "")
    if days > 0 and target != STATES[-1].name:  # nothing lies beyond a closed line
        until = now + int(days * DAY_MS)
        s["rv"] = [until, target, *_arrears(s)]
        text += f"; no automatic escalation beyond {target} until {format_ts(until)} unless the arrears grow"
    else:
        s.pop("rv", None)
    if target != prev:
        action = action_for(prev, target)
        s["status"], s["since"] = target, now
        _set_cap(s, target, ctx.policy)
    else:
        action = REVIEWED
    result.decisions.append(decision(s, ctx, e.event_id, e.ts, action, prev, target, score,
                                      (Reason("MANUAL_REVIEW", text, 5),)))
    return result


def _current(state: AccountState, spec: FeatureSpec) -> AccountState:
    """``state`` in the layout ``spec`` gives: one saved before the features, or under another
    specification, has its aggregates start afresh (see :func:`upgrade`)."""
    return state if state.get("fs") == spec.fingerprint else upgrade(state, spec)


def resolve_hold(state: AccountState, cmd: BreakerCommand, ctx: Context) -> StepResult:
    """Release (apply) or drop the move a breaker held on this account; the breaker re-arms elsewhere."""
    s = copy_state(_current(state, ctx.spec))
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
        action, new = HOLD_DROPPED, prev
        why = Reason("BREAKER_DROPPED", f"{target} held at {format_ts(held_ts)} (decision {held_id}) dropped by {cmd.event_id}{note}", 0)
    result.decisions.append(decision(s, ctx, cmd.event_id, cmd.ts, action, prev, new, s["score"], (why,)))
    return result


def decision(s: AccountState, ctx: Context, cause_event_id: str, ts: int, action: str, prev: str, new: str,
             score: float, reasons: tuple[Reason, ...]) -> Decision:
    """A decision on the account ``s`` as it stands after the move, caused by the event ``cause_event_id``."""
    return Decision(
        decision_id=decision_id(s["id"], cause_event_id, action, new), account_id=s["id"], action=action,
        previous_state=prev, new_state=new, score=score, reasons=reasons, model_version=ctx.model_version,
        policy_version=ctx.policy.version, cause_event_id=cause_event_id, event_ts=ts, credit_limit=s["limit"],
        limit_cap=s["cap"],
    )


def _book(s: AccountState, e: AccountEvent, ctx: Context, r: StepResult) -> None:
    """The ledger effect of the event itself."""
    v = s["v"]
    if isinstance(e, CashFlow):
        if e.balance is not None:
            s["cb"] = e.balance
        elif s["cb"] is not None:
            s["cb"] += e.amount if e.type == "inflow" else -e.amount
    elif isinstance(e, BalanceReport):
        s["cb"] = e.balance
    elif isinstance(e, Transaction):
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
        inst: Instalment = [None] * 8
        inst[I_ID], inst[I_DUE_TS], inst[I_AMOUNT], inst[I_PAID] = e.instalment_id, e.due_ts, e.amount, 0
        inst[I_MISSED], inst[I_LABELLED] = 0, 0
        s["inst"].append(inst)
        if len(s["inst"]) > MAX_OPEN_INSTALMENTS:
            # Only long-delinquent lines get here, and their old instalments are
            # long labelled: fold the two oldest into one.
            a, b = s["inst"][0], s["inst"].pop(1)
            a[I_AMOUNT] += b[I_AMOUNT]
            a[I_PAID] += b[I_PAID]
            a[I_MISSED] = max(a[I_MISSED], b[I_MISSED])
            a[I_LABELLED] = 1
            a[I_X] = None
    elif isinstance(e, Payment):
        s["bal"] = max(0, s["bal"] - e.amount)
        v[_I_PAID30] += e.amount
        _allocate(s, e.amount, e.ts, r, ctx.policy, e.instalment_id)
    elif isinstance(e, DpdReport):
        s["rdpd"], s["rts"] = e.days_past_due, e.ts
        if e.days_past_due == 0:
            # The ledger is authoritative: an account it reports current after a
            # due date met that instalment, whatever our own booking of payments
            # says: it counts as paid (not as a payment of nothing).
            keep = []
            for inst in s["inst"]:
                if inst[I_DUE_TS] <= e.ts:
                    inst[I_PAID] = max(inst[I_PAID], inst[I_AMOUNT])
                    # Met by its due date, unless we saw the date pass unpaid: then late.
                    _settle(s, inst, e.ts if inst[I_MISSED] else inst[I_DUE_TS] - 1, r)
                else:
                    keep.append(inst)
            s["inst"] = keep
    elif isinstance(e, AccountOpened):  # the line of an account whose current account came first
        s["line"], s["limit"], s["cap"], s["opened"] = 1, e.limit, e.limit, e.ts
        s["last_ok"] = s["since"] = s["rts"] = e.ts
    elif isinstance(e, LimitChanged):
        s["limit"] = e.limit
        s["cap"] = cap_on_new_limit(s["status"], s["cap"], e.limit)


def cap_on_new_limit(status: str, cap: int, limit: int) -> int:
    """The cap of a line in ``status`` when the lender sets its limit to ``limit``: a line the monitor has not cut
    takes the new limit; a cut line keeps its cut, within it.

    >>> cap_on_new_limit("watch", 300, 800), cap_on_new_limit("limit_reduced", 300, 800), cap_on_new_limit("frozen", 0, 800)
    (800, 300, 0)
    """
    return limit if STATES[SEVERITY[status]].cap == "limit" else min(cap, limit)


def _allocate(s: AccountState, amount: int, ts: int, r: StepResult, p: Policy, named: str | None = None) -> None:
    """Pay the instalment the payment names first (if open), then the oldest; settle those that are paid.

    An instalment is settled once what is left unpaid is immaterial: under 1.00, or
    under the policy's ``arrears.materiality_share`` of it (a remainder the ledger
    would not chase, which would otherwise age into a phantom arrear). The
    payment-to-due ratio counts an instalment once, when its due date passes or
    it is settled, whichever is first; payments on an instalment already past
    due count as they come. Once no open instalment is past due, the arrears
    the ledger last reported are paid, and stop ageing.
    """
    left = amount
    order = s["inst"]
    if named is not None:
        order = [i for i in order if i[I_ID] == named] + [i for i in order if i[I_ID] != named]
    share = p.arrears.materiality_share
    for inst in order:
        owed = inst[I_AMOUNT] - inst[I_PAID]
        if left > 0 and owed > 0:
            pay = min(owed, left)
            inst[I_PAID] += pay
            left -= pay
            if inst[I_MISSED]:
                s["v"][_I_PAID] += pay
    keep = []
    cleared = False  # the payment settled an instalment that was past due
    for inst in s["inst"]:
        unpaid = inst[I_AMOUNT] - inst[I_PAID]
        if unpaid < SETTLE_TOLERANCE or unpaid <= share * inst[I_AMOUNT]:
            cleared = cleared or inst[I_DUE_TS] <= ts
            _settle(s, inst, ts, r)
        else:
            keep.append(inst)
    s["inst"] = keep
    if not keep or (cleared and not any(i[I_DUE_TS] <= ts for i in keep)):
        s["rdpd"] = 0


def _settle(s: AccountState, inst: Instalment, ts: int, r: StepResult) -> None:
    if not inst[I_MISSED]:
        s["v"][_I_DUE] += inst[I_AMOUNT]
        s["v"][_I_PAID] += inst[I_PAID]
    if ts < inst[I_DUE_TS]:
        s["on_time"] += 1
        s["streak"] += 1
        s["good"] += 1
        s["last_ok"] = max(s["last_ok"], ts)
    else:
        s["late"] += 1
    if not inst[I_LABELLED] and inst[I_X] is not None:
        # Settled before it reached the bad-outcome DPD: a good outcome, learned when a bad one of the
        # same statement would have been (see _age), not now. (The settled instalment itself is dropped.)
        s.setdefault("pend", []).append([inst[I_DUE_TS], inst[I_SCORE], inst[I_X]])


def _age(s: AccountState, ctx: Context, r: StepResult) -> None:
    """Pass due dates at the account clock: count misses, label outcomes, compute DPD.

    Every statement's outcome is learned at the end of one performance window, ``bad_dpd`` days past its
    due date, good or bad alike. Labelled as they happen, goods (known when paid) would come a month ahead
    of the bads of the same statements (known only once that late): the model would learn, at every point,
    from a sample whose recent statements are nearly all good. Early in a portfolio, where every account
    is young at once, that taught it that arrears are a good sign (the lines that cure are labelled first),
    and it scored lines 40 days past due below one in a million.
    """
    now = s["ts"]
    pend = s.get("pend")
    if pend:
        keep = []
        for p in pend:
            if days_between(p[0], now) + 1 >= ctx.bad_dpd:
                r.outcomes.append(Outcome(unpacked(p[2]), p[1], False))
            else:
                keep.append(p)
        if keep:
            s["pend"] = keep
        else:
            del s["pend"]
    worst = 0
    for inst in s["inst"]:
        if now < inst[I_DUE_TS]:
            continue
        days = days_between(inst[I_DUE_TS], now) + 1
        worst = max(worst, days)
        if not inst[I_MISSED]:
            if s["on_time"] + s["late"] + s["missed"] == 0 and s["last_ok"] < inst[I_DUE_TS]:
                s["last_ok"] = inst[I_DUE_TS]  # time since an on-time payment counts from the first due date
            inst[I_MISSED] = 1
            s["v"][_I_DUE] += inst[I_AMOUNT]
            s["v"][_I_PAID] += inst[I_PAID]
            s["missed"] += 1
            s["partial"] += 1 if inst[I_PAID] > 0 else 0
            s["streak"] = 0
            s["good"] = 0
            s["v"][_I_LATE] += 1.0
        if not inst[I_LABELLED] and days >= ctx.bad_dpd:
            inst[I_LABELLED] = 1
            if inst[I_X] is not None:
                r.outcomes.append(Outcome(unpacked(inst[I_X]), inst[I_SCORE], True))
            inst[I_X] = inst[I_SCORE] = None  # learned: neither is read again
    reported = s["rdpd"] + (now - s["rts"]) // DAY_MS if s["rdpd"] > 0 else 0
    s["dpd"] = max(worst, reported)
    s["max_dpd"] = max(s["max_dpd"], s["dpd"])


def _set_cap(s: AccountState, status: str, p: Policy) -> None:
    """What the line may be drawn to after the monitor's action."""
    s["cap"] = cap_for(status, s["limit"], s["bal"], p.recovery.limit_reduction_floor)
