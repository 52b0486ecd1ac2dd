"""Judging a replay against ground truth that the core never saw."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .codec import parse_ts
from .quality import ks_statistic, roc_auc

__all__ = ["EarlyWarningTracker", "Evaluation", "outcome_times"]


def outcome_times(truth: list[dict[str, Any]]) -> dict[str, int]:
    """Each defaulting account's default time from a truth file (accounts without one: none)."""
    return {t["account_id"]: parse_ts(t["default_ts"]) for t in truth if t.get("default_ts")}


@dataclass
class Evaluation:
    accounts: int
    defaulters: int
    account_auc: float | None
    account_ks: float | None
    closure_rate_defaulters: float
    closure_rate_good: float
    action_rate_defaulters: float
    action_rate_good: float
    warning_rate_good: float
    warning_rate_defaulters: float = 0.0

    def lines(self) -> list[str]:
        def f(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"
        return [
            f"accounts {self.accounts} ({self.defaulters} default in truth)",
            f"account-level AUC of the peak score before the outcome: {f(self.account_auc)} (KS {f(self.account_ks)})",
            f"closed before the outcome: {self.closure_rate_defaulters:.1%} of defaulters, {self.closure_rate_good:.1%} of good accounts",
            f"frozen or closed before it: {self.action_rate_defaulters:.1%} of defaulters, {self.action_rate_good:.1%} of good accounts",
            f"warned or worse before it: {self.warning_rate_defaulters:.1%} of defaulters, {self.warning_rate_good:.1%} of good accounts",
        ]


@dataclass
class EarlyWarningTracker:
    """Follows each account's score and state strictly before its outcome: the event at which it
    first reaches ``bad_dpd`` (or, with ``outcome_ts``, its default time in a truth file).

    The event that reveals the outcome (a ledger's report of 30 days past due, say) does not count:
    a warning it triggers is no warning before the default.

    >>> t = EarlyWarningTracker(30)
    >>> t.observe("a", 0.2, 0, 1, ts=1); t.observe("a", 0.9, 30, 4, ts=2)
    >>> t.peak["a"], t.worst_state["a"], t.first_warning["a"]
    (0.2, 1, 1)
    """

    bad_dpd: int = 30
    outcome_ts: dict[str, int] = field(default_factory=dict)  # account -> its default time, when a truth file gives one
    peak: dict[str, float] = field(default_factory=dict)
    reached_bad: dict[str, int] = field(default_factory=dict)  # account -> event time it reached bad_dpd
    worst_state: dict[str, int] = field(default_factory=dict)
    first_warning: dict[str, int] = field(default_factory=dict)  # account -> event time of its first escalation
    seen: set[str] = field(default_factory=set)  # every account observed

    def observe(self, account_id: str, score: float | None, dpd: int, severity: int, ts: int = 0) -> None:
        """``score`` is None while the model is still cold (never acted on, never graded)."""
        self.seen.add(account_id)
        if account_id in self.reached_bad:
            return
        known = self.outcome_ts.get(account_id)
        if dpd >= self.bad_dpd or (known is not None and ts >= known):
            self.reached_bad[account_id] = ts
            return
        if score is not None and score > self.peak.get(account_id, -1.0):
            self.peak[account_id] = score
        if severity > self.worst_state.get(account_id, 0):
            self.worst_state[account_id] = severity
        if severity >= 1 and account_id not in self.first_warning:
            self.first_warning[account_id] = ts

    def evaluate(self, truth: list[dict[str, Any]]) -> Evaluation:
        """Judged against ``truth``; ValueError if it is another log's (most of its accounts never seen)."""
        found = sum(t["account_id"] in self.seen for t in truth)
        if found * 2 < len(truth):
            raise ValueError(f"the truth file does not fit this log: {found} of its {len(truth)} accounts appear in it")
        ys: list[int] = []
        ps: list[float] = []
        closed = {True: 0, False: 0}
        acted = {True: 0, False: 0}
        warned = {True: 0, False: 0}
        count = {True: 0, False: 0}
        for t in truth:
            aid, bad = t["account_id"], bool(t["defaults"])
            count[bad] += 1
            ys.append(int(bad))
            ps.append(self.peak.get(aid, 0.0))
            worst = self.worst_state.get(aid, 0)
            closed[bad] += worst >= 4
            acted[bad] += worst >= 3
            warned[bad] += worst >= 1

        def rate(d: dict[bool, int], k: bool) -> float:
            return d[k] / count[k] if count[k] else 0.0

        return Evaluation(
            len(truth), count[True], roc_auc(ys, ps), ks_statistic(ys, ps),
            rate(closed, True), rate(closed, False), rate(acted, True), rate(acted, False), rate(warned, False),
            rate(warned, True),
        )
