"""What a policy update would do at once: the preview a risk team reads before it pushes one.

A policy update takes effect from its event time; each account is judged under it at its next
event. Judged now, on each account's state as it stands (its last score, its arrears and
counters as of its last event), the accounts whose move under the new policy differs from their
move under the policy in force are the ones the update itself moves "at once": they are counted
by (from, to) state, escalations apart from relief. A reviewer's decision in force on an account
(:func:`riskmon.models.step.review_blocks`) holds under either policy.

Closures are what the mass-action breaker guards (:mod:`riskmon.models.breaker`). Its share rule
holds more than ``breaker.max_share`` of the open accounts closed in one window (with at least
``breaker.min_count``); a push that would close more than that at once is refused unless forced.
The rule is taken from the policy in force when it guards closures (an update cannot switch off
the guard it would trip), otherwise from the new one; with neither guarding closures, nothing
is refused. The breaker itself counts per partition; this preview counts the whole portfolio.

>>> from riskmon.models.policy import default_policy
>>> from riskmon.models.state import new_state
>>> s = new_state("a1", "CNY", 0, 100_000); s["dpd"] = 20
>>> d = policy_diff([s], default_policy(), default_policy().updated({"dpd.limit": 15}, "t"))
>>> d.moves, d.escalations, d.closures
(Counter({('normal', 'limit_reduced'): 1}), 1, 0)
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from .early_warning import next_state
from .policy import Policy
from .state import AccountState
from .step import review_blocks
from .vocabulary import SEVERITY

__all__ = ["PolicyDiff", "policy_diff"]


@dataclass
class PolicyDiff:
    current: str  # the policy in force (its version)
    new: str  # the update's version
    accounts: int = 0  # lines judged
    open_accounts: int = 0  # of them, not closed
    moves: Counter[tuple[str, str]] = field(default_factory=Counter)  # (from, to) -> accounts the update moves
    allowed_closures: int | None = None  # what the breaker's share rule lets through at once (None: unguarded)

    @property
    def escalations(self) -> int:
        return sum(n for (a, b), n in self.moves.items() if SEVERITY[b] > SEVERITY[a])

    @property
    def relief(self) -> int:
        return sum(n for (a, b), n in self.moves.items() if SEVERITY[b] < SEVERITY[a])

    @property
    def closures(self) -> int:
        return sum(n for (_, b), n in self.moves.items() if b == "closed")

    @property
    def refused(self) -> bool:
        """More closures at once than the breaker allows."""
        return self.allowed_closures is not None and self.closures > self.allowed_closures

    def lines(self) -> list[str]:
        out = [f"policy {self.new} against {self.current}, on {self.accounts} lines ({self.open_accounts} open): "
               f"{self.escalations} would escalate and {self.relief} be relieved at their next event"]
        for (a, b), n in sorted(self.moves.items(), key=lambda m: (-m[1], m[0])):
            out.append(f"  {a} -> {b}: {n}")
        if self.allowed_closures is None:
            out.append(f"  closures at once: {self.closures} (no breaker guards closures)")
        else:
            out.append(f"  closures at once: {self.closures}, the breaker allows {self.allowed_closures}"
                       + (": REFUSED unless forced" if self.refused else ""))
        return out


def policy_diff(states: Iterable[AccountState], current: Policy, new: Policy, model_ready: bool = True) -> PolicyDiff:
    """The accounts ``new`` would move at once, on their states as they stand (see the module's docstring).

    ``model_ready``: whether the score may act (it may unless a policy's ``score.min_labels`` holds it back)."""
    d = PolicyDiff(current.version, new.version)
    for s in states:
        if not s.get("line", 1):
            continue  # a current account whose credit line has not opened
        d.accounts += 1
        d.open_accounts += s["status"] != "closed"
        stays = s["status"]
        now, then = (next_state(p, s, s["score"], model_ready) for p in (current, new))
        target = then[0] if then is not None and not review_blocks(s, then[0]) else stays
        if target != stays and target != (now[0] if now is not None and not review_blocks(s, now[0]) else stays):
            d.moves[(stays, target)] += 1
    rules = current.breaker if current.breaker.guards("closure") else new.breaker
    if rules.guards("closure"):
        d.allowed_closures = max(int(rules.min_count) - 1, math.floor(rules.max_share * d.open_accounts))
    return d
