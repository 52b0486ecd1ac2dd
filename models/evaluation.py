"""Judging a replay against ground truth that the core never saw."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .quality import ks_statistic, roc_auc

__all__ = ["EarlyWarningTracker", "Evaluation"]


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

    def lines(self) -> list[str]:
        def f(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"
        return [
            f"accounts {self.accounts} ({self.defaulters} default in truth)",
            f"account-level AUC of the peak score before 30 DPD: {f(self.account_auc)} (KS {f(self.account_ks)})",
            f"closed: {self.closure_rate_defaulters:.1%} of defaulters, {self.closure_rate_good:.1%} of good accounts",
            f"frozen or closed: {self.action_rate_defaulters:.1%} of defaulters, {self.action_rate_good:.1%} of good accounts",
            f"warned or worse: {self.warning_rate_good:.1%} of good accounts",
        ]


@dataclass
class EarlyWarningTracker:
    """Follows each account's score up to the moment it first reaches ``bad_dpd``."""

    bad_dpd: int = 30
    peak: dict[str, float] = field(default_factory=dict)
    reached_bad: set[str] = field(default_factory=set)
    worst_state: dict[str, int] = field(default_factory=dict)

    def observe(self, account_id: str, score: float | None, dpd: int, severity: int) -> None:
        """``score`` is None while the model is still cold (never acted on, never graded)."""
        if account_id not in self.reached_bad:
            if score is not None and score > self.peak.get(account_id, -1.0):
                self.peak[account_id] = score
            if dpd >= self.bad_dpd:
                self.reached_bad.add(account_id)
        if severity > self.worst_state.get(account_id, 0):
            self.worst_state[account_id] = severity

    def evaluate(self, truth: list[dict[str, Any]]) -> Evaluation:
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
        )
