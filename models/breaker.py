"""The mass-action breaker: holds automatic closures (or limit cuts) when they come too fast.

A model or policy push gone wrong shows as a wave of severe actions. Per
partition and per guarded action, the breaker counts the actions the policy
calls for in event-time hours. It trips when the last ``window_hours`` hold at
least ``min_count`` of them and either

- more than ``multiple`` times the busiest window of the ``baseline_days``
  before (a month-end surge is like last month's, a bad push is not); this rule
  waits until the shard has seen ``baseline_days`` of events, so that a
  baseline exists; or
- more than ``max_share`` of the partition's open accounts.

Once tripped it stays tripped: every further guarded action is held (a
``held`` decision, for review, the account unchanged) until a
``breaker_command`` control event releases the held actions or drops them. A
release makes the wave it released the accepted level for the baseline; a drop
forgets the wave.

>>> from riskmon.models.policy import default_policy
>>> b, day = Breaker(), 86_400_000
>>> b.seen(0)
>>> p = default_policy().updated({"breaker.min_count": 3}, "t")
>>> [b.admit(p, "closure", 31 * day + 3_600_000 * h, open_accounts=1000) is None for h in range(4)]
[True, True, False, False]
>>> b.tripped["closure"][0] == 31 * day + 7_200_000
True
"""
from __future__ import annotations

from typing import Any

from .decisions import Reason
from .policy import Policy
from .units import HOUR_MS

__all__ = ["Breaker"]


class Breaker:
    """Event-time counts of guarded actions, and which actions are tripped."""

    def __init__(self) -> None:
        self.hours: dict[str, dict[int, int]] = {}  # action -> event-time hour -> actions called for
        self.tripped: dict[str, tuple[int, str]] = {}  # action -> (event time it tripped, why)
        self.accepted: dict[str, tuple[int, int]] = {}  # action -> (event time released, the window's count then)
        self.since: int | None = None  # the first event time the shard saw

    def seen(self, ts: int) -> None:
        """Note an event time: the baseline rule waits for ``baseline_days`` of history."""
        if self.since is None or ts < self.since:
            self.since = ts

    def guards(self, policy: Policy, action: str) -> bool:
        return policy.breaker.guards(action)

    def admit(self, policy: Policy, action: str, ts: int, open_accounts: int) -> Reason | None:
        """Count one ``action`` the policy calls for at ``ts``; a reason to hold it, or None to let it through."""
        if not self.guards(policy, action):
            return None
        t = policy.breaker
        hour = ts // HOUR_MS
        counts = self.hours.setdefault(action, {})
        counts[hour] = counts.get(hour, 0) + 1
        window = max(1, int(t.window_hours))
        horizon = hour - window - int(t.baseline_days * 24)
        for h in [h for h in counts if h <= horizon]:
            del counts[h]
        if action in self.tripped:
            since, why = self.tripped[action]
            return Reason("BREAKER_HELD", f"{action} held for review: the breaker tripped {_hours(ts - since)} ago ({why})", 5)
        now = sum(n for h, n in counts.items() if h > hour - window)
        baseline = _busiest(counts, hour - window, window)
        released = self.accepted.get(action)
        if released is not None and released[0] // HOUR_MS > horizon:
            baseline = max(baseline, released[1])
        warm = self.since is not None and ts - self.since >= t.baseline_days * 24 * HOUR_MS
        by_baseline = warm and now > t.multiple * baseline
        by_share = now > t.max_share * max(open_accounts, 0)
        if now >= t.min_count and (by_baseline or by_share):
            why = (f"{now} {action}s in {window} h against a busiest {window} h of {baseline} in the {t.baseline_days:g} days before"
                   if by_baseline else f"{now} {action}s in {window} h, over {t.max_share:.0%} of {open_accounts} open accounts")
            self.tripped[action] = (ts, why)
            return Reason("BREAKER_HELD", f"{action} held for review: the breaker tripped ({why})", 5)
        return None

    def reset(self, action: str, ts: int, policy: Policy, release: bool) -> None:
        """Re-arm after a release (the wave becomes the accepted level) or a drop (the wave is forgotten)."""
        self.tripped.pop(action, None)
        window = max(1, int(policy.breaker.window_hours))
        hour = ts // HOUR_MS
        counts = self.hours.get(action, {})
        recent = [h for h in counts if hour - window < h <= hour]
        if release:
            self.accepted[action] = (ts, sum(counts[h] for h in recent))
        else:
            for h in recent:
                del counts[h]

    def state(self) -> dict[str, Any]:
        return {"hours": self.hours, "tripped": self.tripped, "accepted": self.accepted, "since": self.since}

    @classmethod
    def from_state(cls, data: dict[str, Any] | None) -> Breaker:
        b = cls()
        if data:
            b.hours, b.tripped, b.accepted, b.since = data["hours"], data["tripped"], data["accepted"], data["since"]
        return b


def _busiest(counts: dict[int, int], last: int, window: int) -> int:
    """The most actions in any ``window`` consecutive hours up to hour ``last``.

    >>> _busiest({1: 2, 2: 3, 30: 4, 31: 1}, 40, 24), _busiest({1: 2, 2: 3, 30: 4}, 10, 24)
    (5, 5)
    """
    keys = sorted(h for h in counts if h <= last)
    best = total = j = 0
    for h in keys:
        total += counts[h]
        while keys[j] <= h - window:
            total -= counts[keys[j]]
            j += 1
        best = max(best, total)
    return best


def _hours(ms: int) -> str:
    return f"{ms / HOUR_MS:.0f} h"
