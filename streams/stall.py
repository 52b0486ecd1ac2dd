"""A partition that cannot make progress says so: records wait for it, and nothing is applied, for too long.

A worker can be stuck without crashing: a rebalance that never completes, a broker that takes writes and never
confirms them, a topic the event-time hold waits for that never catches up. Such a worker looks alive to an
orchestrator (it answers /metrics) while its partitions' decisions stop. :class:`StallWatch` is told, now and
then, how many input records each owned partition has waiting and a marker of what it has applied (anything
that changes when a record is applied); a partition with records waiting and an unchanged marker since
``limit_s`` seconds is stalled. The worker logs one line when a partition stalls and one when it moves again,
and exports ``riskmon_stalled_seconds`` and ``riskmon_partition_stalled`` (alert: RiskmonPartitionStalled).

>>> w = StallWatch(limit_s=60)
>>> w.observe({0: (5, "a"), 1: (0, "x")}, now=0.0)
([], [])
>>> w.observe({0: (9, "a"), 1: (0, "x")}, now=61.0)  # records waiting, nothing applied for 61 s
([(0, 9, 61.0)], [])
>>> w.stalled_seconds()
{0: 61.0, 1: 0.0}
>>> w.observe({0: (2, "b"), 1: (0, "x")}, now=62.0)  # it moved: said once, and the clock starts again
([], [(0, 62.0)])
>>> w.stalled_seconds()
{0: 0.0, 1: 0.0}
"""
from __future__ import annotations

from collections.abc import Hashable

__all__ = ["StallWatch"]


class StallWatch:
    """Per partition: seconds with records waiting and nothing applied; see the module."""

    def __init__(self, limit_s: float) -> None:
        if limit_s <= 0:
            raise ValueError("a stall limit is a positive number of seconds")
        self.limit_s = limit_s
        self._since: dict[int, float] = {}  # partition -> when it last moved, or when records began to wait
        self._marker: dict[int, Hashable] = {}
        self._waiting: dict[int, bool] = {}
        self._said: set[int] = set()  # stalled partitions already reported
        self._now = 0.0

    def observe(self, partitions: dict[int, tuple[int, Hashable]], now: float) -> tuple[
            list[tuple[int, int, float]], list[tuple[int, float]]]:
        """``partitions``: partition -> (records waiting, applied marker), for every partition owned now.

        Returns (newly stalled: (partition, records waiting, seconds), moved again after a stall: (partition, seconds)).
        """
        self._now = now
        stalled, moved = [], []
        for p in list(self._since):
            if p not in partitions:  # no longer owned
                del self._since[p], self._marker[p], self._waiting[p]
                self._said.discard(p)
        for p, (waiting, marker) in partitions.items():
            if p not in self._since or marker != self._marker[p] or (waiting > 0) != self._waiting[p] and waiting > 0:
                if p in self._said and marker != self._marker.get(p):
                    moved.append((p, now - self._since[p]))
                    self._said.discard(p)
                self._since[p], self._marker[p] = now, marker
            self._waiting[p] = waiting > 0
            if waiting <= 0:
                self._said.discard(p)
                continue
            seconds = now - self._since[p]
            if seconds >= self.limit_s and p not in self._said:
                self._said.add(p)
                stalled.append((p, waiting, seconds))
        return stalled, moved

    def stalled_seconds(self) -> dict[int, float]:
        """Partition -> seconds it has had records waiting with nothing applied (0 while it moves or has none)."""
        return {p: (self._now - since if self._waiting.get(p) else 0.0) for p, since in sorted(self._since.items())}

    def stalled(self) -> set[int]:
        """The partitions stalled beyond the limit now."""
        return {p for p, s in self.stalled_seconds().items() if s >= self.limit_s}
