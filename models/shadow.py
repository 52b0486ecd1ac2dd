"""A candidate policy in shadow: judged beside the live one on every event, never acting on an account.

A ``policy_update`` control event with ``shadow: install`` puts a candidate (the policy in force at its
event time with the event's thresholds) in shadow from that time; ``promote`` puts the candidate in force
from its time, as a live policy update would; ``drop`` discards it. Every shard applies them, in event-time
order with every other event, so the stream and replay agree.

While a candidate is in shadow, each account event that the live policy judges is judged by the candidate
too, on the same features and score, against the state the candidate would have left the line in: its own
early-warning state, the time it entered it, its limit cap and its count of on-time payments since its last
escalation. Those four live under ``"sh"`` in the account's record, which nothing live reads; the live
state, the live decisions, the breaker and the shard's counts never depend on them. A line's shadow state
starts as the live one stood just before the first event the candidate judges on it.

What the candidate would decide comes out as :class:`~riskmon.models.decisions.Decision` records on
:attr:`StepResult.shadow` (the stream writes them to ``PREFIX.shadow-decisions``, replay to
``--shadow-out``), with the candidate's version and an id of their own. The candidate has no breaker (its
decisions are never held, they act on nobody) and takes no part in a reviewer's decision, though a review's
protection holds back its escalations as it does the live policy's.
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Any

from .decisions import Decision, decision_id
from .early_warning import next_state, score_drivers
from .errors import RejectReason, Rejected
from .events import AccountEvent, LimitChanged, PolicyUpdate, Review
from .features import rounded, vector
from .policy import Policy
from .state import AccountState
from .step import Context, cap_on_new_limit, decision, review_blocks
from .vocabulary import SEVERITY, action_for, cap_for

__all__ = ["SH_KEY", "SH_STATUS", "ShadowTimeline", "live_before", "shadow_step"]

# The record an account keeps under "sh" while a candidate judges it.
SH_KEY, SH_STATUS, SH_SINCE, SH_CAP, SH_BASE, SH_MISSED = range(6)
# SH_KEY: the install event's id (a record of an earlier candidate starts afresh); SH_BASE: the account's count of
# on-time settlements when the candidate last reset its good-behaviour count; SH_MISSED: its count of missed
# instalments then (a new miss resets the count, as it does the live one).


class ShadowTimeline:
    """A shard's candidate policies: (event time, candidate or None once promoted or dropped, install id), sorted."""

    def __init__(self, entries: list[tuple[int, Policy | None, str]] | None = None) -> None:
        self.entries = entries if entries is not None else []

    def at(self, ts: int) -> tuple[Policy, str] | None:
        """The candidate in shadow at event time ``ts`` and its install id, if any."""
        entries = self.entries
        if not entries:
            return None
        i = bisect.bisect_right(entries, ts, key=lambda e: e[0]) - 1
        if i < 0 or entries[i][1] is None:
            return None
        return entries[i][1], entries[i][2]  # type: ignore[return-value]

    def command(self, event: PolicyUpdate, live: Policy) -> Policy | None:
        """Apply an install, promote or drop; the policy to put in force from ``event.ts`` (a promotion), else None.

        ``live``: the policy in force at ``event.ts``, which an install's thresholds change. A promotion or drop
        that names another version than the candidate in shadow then is refused (:class:`Rejected`)."""
        if event.shadow == "install":
            self._insert((event.ts, live.updated(event.thresholds, event.policy_version), event.event_id))
            return None
        current = self.at(event.ts)
        if current is None or current[0].version != event.policy_version:
            what = "none" if current is None else current[0].version
            raise Rejected(RejectReason.BAD_POLICY, f"no candidate {event.policy_version!r} in shadow at the {event.shadow}'s "
                                                    f"time to {event.shadow} (in shadow then: {what})")
        self._insert((event.ts, None, event.event_id))
        return current[0] if event.shadow == "promote" else None

    def _insert(self, entry: tuple[int, Policy | None, str]) -> None:
        self.entries.insert(bisect.bisect_right([e[0] for e in self.entries], entry[0]), entry)


def live_before(s: AccountState | None) -> tuple[Any, ...] | None:
    """What a line's shadow state starts from, read before the live step changes ``s``."""
    if s is None or not s.get("line", 1):
        return None
    return s["status"], s["since"], s["cap"], s["on_time"] - s["good"], s["missed"], s.get("sh")


def shadow_step(s: AccountState, event: AccountEvent, candidate: Policy, key: str, before: tuple[Any, ...] | None,
                ctx: Context) -> tuple[list[Decision], tuple[str, str] | None, tuple[str, str]]:
    """Judge one applied account event by the candidate: (its decisions, the (live, shadow) states of the line
    before as the shard counts them (None if the candidate had not judged it), and after).

    ``s``: the account's state after the live step; ``before``: :func:`live_before` of it before; ``ctx``: the
    live step's (its model, model version and features; the candidate's own ``score.min_labels`` says when the
    score is acted on)."""
    counted: tuple[str, str] | None = None
    sh: list[Any]
    if before is None:  # the line opened with this event: it starts where the live one started
        sh = [key, "normal", s["ts"], s["limit"], s["on_time"], s["missed"]]
    elif before[5] is None or before[5][SH_KEY] != key:  # first judged now: from the live line as it stood
        sh = [key, *before[:5]]
    else:
        counted = (before[0], before[5][SH_STATUS])
        sh = list(before[5])  # a new record: the one ``before`` holds may be the live step's input, read by the caller
    model_ready = ctx.model.n_learned >= candidate.score.min_labels
    out: list[Decision] = []
    if sh[SH_MISSED] != s["missed"]:  # an instalment was missed: good behaviour counts afresh, as it does live
        sh[SH_BASE], sh[SH_MISSED] = s["on_time"], s["missed"]
    if isinstance(event, LimitChanged):  # as the live step does with its cap, for the line the candidate left
        sh[SH_CAP] = cap_on_new_limit(sh[SH_STATUS], sh[SH_CAP], event.limit)
    if not isinstance(event, Review):  # a reviewer's decision is on the live line; the candidate makes none on it
        view = s.copy()
        view["status"], view["since"], view["good"] = sh[SH_STATUS], sh[SH_SINCE], s["on_time"] - sh[SH_BASE]
        score = s["score"]
        move = next_state(candidate, view, score, model_ready)
        if move is not None:
            new, reasons = move
            if not review_blocks(s, new):
                prev = sh[SH_STATUS]
                if model_ready and SEVERITY[new] > SEVERITY[prev]:
                    # The vector the live step scored: its move changed nothing features read.
                    x = rounded(vector(s, ctx.spec)) if event.type == "instalment_due" else vector(s, ctx.spec)
                    reasons = reasons + score_drivers(ctx.model.contributions_vector(ctx.spec.names, x), ctx.spec)
                    sh[SH_BASE] = s["on_time"]
                action = action_for(prev, new)
                sh[SH_STATUS], sh[SH_SINCE] = new, s["ts"]
                sh[SH_CAP] = cap_for(new, s["limit"], s["bal"], candidate.recovery.limit_reduction_floor)
                live = decision(s, ctx, event.event_id, event.ts, action, prev, new, score, tuple(reasons))
                out.append(dataclasses.replace(
                    live, decision_id=decision_id(s["id"], f"{event.event_id}\x1fshadow:{key}", action, new),
                    policy_version=candidate.version, limit_cap=sh[SH_CAP]))
    s["sh"] = sh
    return out, counted, (s["status"], sh[SH_STATUS])
