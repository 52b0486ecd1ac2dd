"""The event-time hold: per partition, accepted events wait here until no topic can still precede them.

Input arrives on four co-partitioned topics (control, lifecycle, transactions,
repayments). Per partition, accepted events apply in the order replay uses
(:func:`riskmon.models.events.event_order`: event time, category, offset) once no
topic of that partition can still deliver an earlier one: every topic has
delivered an event ``lateness`` later, or has nothing more to deliver (then an
event waits ``lateness`` of wall-clock time, so a quiet live feed still flows).
So events out of order by up to ``lateness`` apply in event-time order, exactly
as replay applies them. Memory is bounded: past ``max_held`` waiting events the
earliest go ahead (a straggler from a slower topic will then be late).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Callable

from riskmon.models.events import CATEGORY_RANK, Event

__all__ = ["EventTimeHold", "Held", "SOURCES"]

# The topics a partition merges: the four categories', and the repartition topic, where other
# partitions send on the records of this partition's accounts that a producer put on theirs.
SOURCES = (*CATEGORY_RANK, "repartition")


@dataclass(order=True)
class Held:
    order: tuple[int, int, int]
    event: Event = field(compare=False)
    raw: bytes = field(compare=False)
    category: str = field(compare=False)
    topic: str = field(compare=False)
    offset: int = field(compare=False)
    handle: Any = field(compare=False)
    received: float = field(compare=False)  # time.monotonic() at ingest
    # (topic, partition, offset) where a producer first put a record that came here through the
    # repartition topic: what a dead letter of it names (None: it is where it was first put).
    origin: tuple[str, int, int] | None = field(default=None, compare=False)


class EventTimeHold:
    """One partition's waiting events, and the latest event time each topic has delivered."""

    def __init__(self, lateness_s: float = 0.0, max_held: int = 100_000) -> None:
        self.lateness_s = lateness_s
        self.lateness_ms = int(lateness_s * 1000)
        self.max_held = max_held
        self.heap: list[Held] = []
        self.max_ts: dict[str, int] = {}  # category -> latest event time delivered

    def __len__(self) -> int:
        return len(self.heap)

    def delivered(self, category: str, ts: int) -> None:
        """A topic delivered an event of time ``ts`` (accepted or not: it bounds what the topic can still send)."""
        self.max_ts[category] = max(self.max_ts.get(category, ts), ts)

    def push(self, held: Held) -> None:
        heapq.heappush(self.heap, held)

    def release(self, caught_up: Callable[[str], bool], now: float) -> tuple[list[Held], int]:
        """(the events no topic can still precede, in apply order; how many of them went early to bound memory).

        ``caught_up(category)``: that topic has nothing more to deliver now. ``now``
        (time.monotonic()) times the wait of events once every topic is caught up.
        """
        ready: list[Held] = []
        forced = 0
        heap = self.heap
        if heap:
            bounds = [self.max_ts.get(c) for c in SOURCES if not caught_up(c)]
            if all(b is not None for b in bounds):
                watermark = min((b for b in bounds if b is not None), default=None)
                if watermark is not None:
                    watermark -= self.lateness_ms
                    while heap and heap[0].order[0] <= watermark:
                        ready.append(heapq.heappop(heap))
                else:  # nothing more to deliver now: wait out the lateness on the wall clock
                    cutoff = now - self.lateness_s
                    while heap and (not self.lateness_s or heap[0].received <= cutoff):
                        ready.append(heapq.heappop(heap))
            while len(heap) > self.max_held:
                ready.append(heapq.heappop(heap))
                forced += 1
        return ready, forced
