"""The event-time hold: per partition, accepted events wait here until no topic can still precede them.

Input arrives on four co-partitioned topics (control, lifecycle, transactions,
repayments). Per partition, accepted events apply in the order replay uses
(:func:`riskmon.models.events.event_order`: event time, category, offset) once no
topic of that partition can still deliver an earlier one: every topic has
delivered an event ``lateness`` later, or has nothing more to deliver and has been
quiet for ``quiet_s`` (when all are, an event waits ``lateness`` of wall-clock
time, so a quiet live feed still flows).

Why quiet, and not only caught up: a topic that has delivered everything the
broker held at its last fetch can still get a record of an earlier time, which
the producer sent before a later one on another topic. One producer's records
to different partitions go in separate batches and requests, a partition's next
batch only once its last is confirmed, so they are appended out of the order
they were sent in; a topic's high-water mark is also only as new as its last
fetch. Treated as done the moment it was caught up, a topic let later events of
the others go first: a live feed of 64,151 events fed at 1,500/s had about 200
applied late, each a score a little different from replay's. A topic that
delivered something within ``quiet_s`` still bounds the others by its latest
event time (as Flink's idleness timeout does for a source).
So events out of order by up to ``lateness`` apply in event-time order, exactly
as replay applies them. Memory is bounded: past ``max_held`` waiting events the
earliest go ahead (a straggler from a slower topic will then be late).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from riskmon.models.events import CATEGORY_RANK, Event

__all__ = ["EventTimeHold", "Held", "QUIET_S", "SOURCES"]

# The topics a partition merges: the four categories', and the repartition topic, where other
# partitions send on the records of this partition's accounts that a producer put on theirs.
SOURCES = (*CATEGORY_RANK, "repartition")

# How long a caught-up topic must have delivered nothing before it stops bounding the others
# (seconds of wall-clock time; see the module's docstring).
QUIET_S = 0.5


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

    def __init__(self, lateness_s: float = 0.0, max_held: int = 100_000, quiet_s: float = QUIET_S) -> None:
        self.lateness_s = lateness_s
        self.lateness_ms = int(lateness_s * 1000)
        self.max_held = max_held
        self.quiet_s = quiet_s
        self.heap: list[Held] = []
        self.max_ts: dict[str, int] = {}  # category -> latest event time delivered
        self.last_at: dict[str, float] = {}  # category -> when (time.monotonic()) it last delivered

    def __len__(self) -> int:
        return len(self.heap)

    def delivered(self, category: str, ts: int, at: float) -> None:
        """A topic delivered an event of time ``ts`` at ``at`` (time.monotonic()); accepted or not, it bounds
        what the topic can still send."""
        self.max_ts[category] = max(self.max_ts.get(category, ts), ts)
        self.last_at[category] = at

    def push(self, held: Held) -> None:
        heapq.heappush(self.heap, held)

    def release(self, caught_up: Callable[[str], bool], now: float) -> tuple[list[Held], int]:
        """(the events no topic can still precede, in apply order; how many of them went early to bound memory).

        ``caught_up(category)``: that topic has nothing more to deliver now. ``now``
        (time.monotonic()) times how long caught-up topics have been quiet, and the wait of
        events once every topic is caught up and quiet.
        """
        ready: list[Held] = []
        forced = 0
        heap = self.heap
        if heap:
            quiet = now - self.quiet_s if self.quiet_s > 0 else math.inf  # 0: caught up is enough
            bounds = [self.max_ts.get(c) for c in SOURCES
                      if not (caught_up(c) and self.last_at.get(c, -math.inf) <= quiet)]
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
