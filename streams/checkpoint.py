"""The order of a durable commit, for one input partition, in one place.

A round of applied events is made durable by the host in this order:
decisions and dead letters delivered; the partition's snapshot written (one
record, so all or nothing: the model, the policy timeline, the input offsets
applied, and the account states changed since the last snapshot); those
account states written under their own keys; the input acked. A worker killed
at any point resumes from the last snapshot (:meth:`Checkpoint.restore`): it
restores the states the snapshot carries (an account key written after it is
the same state), skips input offsets the snapshot records as applied, and
redoes the rest exactly. Decisions of a round whose snapshot was lost are
delivered again, with the same ids. This holds only if what a restarted worker
reads is a prefix of these writes in this order: a host whose store outlives
the process must not let it run ahead of the log (``streams.app``: a rocksdb
store takes a record only once the broker has it).

Snapshots are taken at most every ``snapshot_every_s`` (and sooner when many
states or acks wait): rounds in between only deliver their decisions; the next
snapshot carries their states and acks their records.
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from typing import Any

import orjson

from riskmon.models.codec import dumps
from riskmon.models.featurespec import FeatureSpec
from riskmon.models.monitor import Monitor
from riskmon.models.state import AccountState

__all__ = [
    "Checkpoint", "DeadLetter", "Forward", "MAX_ROUND_EVENTS", "NO_ACK", "NoAck", "OffsetSet", "QUALITY_KEY_PREFIX", "Round", "SHARD_KEY_PREFIX",
]

log = logging.getLogger("riskmon.checkpoint")

SHARD_KEY_PREFIX = b"__shard__:"
QUALITY_KEY_PREFIX = b"__quality__:"
QUALITY_EVERY_ROUNDS = 50
# A round's snapshot record carries the states it changed (up to ~1 KB each):
# 256 events keep it far below Kafka's 1 MB default record limit. A batch of
# 1,000 new accounts in one round made a 1.66 MB record and the producer crashed.
MAX_ROUND_EVENTS = 256

# Before any event time (event times reach back to 1900, before the epoch).
NO_TIME = -(2**62)

# (key, original bytes, headers) of a record sent to the dead-letter topic.
DeadLetter = tuple[bytes | None, bytes, list[tuple[str, bytes]]]
# (the partition that owns its account, key, original bytes, headers) of a record sent on to the repartition topic.
Forward = tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]


class NoAck:
    """The handle of a broadcast record: no consumer group tracks it, so there is nothing to ack.

    Where a partition stands in the control topic (streams.control) lives in its snapshot instead.

    >>> NO_ACK.ack() is None
    True
    """

    __slots__ = ()

    def ack(self) -> None:
        return None

    def __repr__(self) -> str:
        return "NO_ACK"


NO_ACK = NoAck()


class OffsetSet:
    """Offsets of one topic partition that were applied: all below ``low``, plus ``extra``.

    >>> s = OffsetSet(10); s.add(11); s.add(10); s.low, sorted(s.extra), 9 in s, 12 in s
    (12, [], True, False)
    """

    def __init__(self, low: int) -> None:
        self.low = low
        self.extra: set[int] = set()

    def add(self, offset: int) -> None:
        if offset == self.low:
            self._raise_low(offset + 1)
        elif offset > self.low:
            self.extra.add(offset)

    def add_range(self, start: int, stop: int) -> None:
        """Add offsets ``start`` to ``stop - 1``.

        >>> s = OffsetSet(5); s.add(9); s.add_range(5, 9); s.low, sorted(s.extra)
        (10, [])
        """
        if start > self.low:
            self.extra.update(range(start, stop))
        elif stop > self.low:
            self.extra = {o for o in self.extra if o >= stop}
            self._raise_low(stop)

    def missing_between(self, start: int, stop: int) -> int:
        """How many offsets from ``start`` to ``stop - 1`` are not in the set.

        >>> s = OffsetSet(10); s.add(12); s.missing_between(5, 14), s.missing_between(12, 13)
        (3, 0)
        """
        start = max(start, self.low)
        return max(stop - start, 0) - sum(1 for o in self.extra if start <= o < stop)

    def _raise_low(self, low: int) -> None:
        """Everything below ``low`` is in; so is any run of ``extra`` that now joins it."""
        self.low = low
        while self.low in self.extra:
            self.extra.discard(self.low)
            self.low += 1

    def __contains__(self, offset: int) -> bool:
        return offset < self.low or offset in self.extra


@dataclass
class Round:
    """The output of one round in one partition, in the order it must be made durable."""

    partition: int
    anchor: Any  # a handle from this partition (the host writes the table in its context)
    decisions: list[tuple[str, bytes]] = field(default_factory=list)
    shadow: list[tuple[str, bytes]] = field(default_factory=list)  # a candidate policy's would-be decisions
    dead: list[DeadLetter] = field(default_factory=list)
    forwards: list[Forward] = field(default_factory=list)
    states: list[tuple[bytes, bytes]] = field(default_factory=list)
    snapshot: list[tuple[bytes, bytes]] = field(default_factory=list)
    acks: list[Any] = field(default_factory=list)
    received: list[float] = field(default_factory=list)  # arrival times of the events applied
    # For the portfolio's trainer (streams.trainer): the outcomes the round revealed, then the partition's watermark.
    training: list[bytes] = field(default_factory=list)


class Checkpoint:
    """One partition's progress toward durability: the offsets applied, and what waits for the next snapshot."""

    def __init__(self, partition: int, applied: dict[str, OffsetSet] | None = None, applied_ts: int = NO_TIME,
                 rounds: int = 0) -> None:
        self.partition = partition
        self.applied = applied if applied is not None else {}  # input topic category -> offsets applied
        self.applied_ts = applied_ts  # the latest event time applied in the partition
        self.rounds = rounds  # snapshots taken
        self.last_offset: dict[str, int] = {}  # category -> highest offset seen in this life
        # category -> (the offset the partition was sought back to, the lowest record seen past it since)
        self.refetch: dict[str, tuple[int, int]] = {}
        self.saved_at = 0.0  # time.time() when the host last made a snapshot of this partition durable
        self.sealed_at = 0.0  # time.monotonic() of the last snapshot
        self.last_handle: Any = None  # a handle from this partition, for a round that only seals
        # Applied since the last snapshot: the states to write with the next one, and the records it will ack.
        self.pending: dict[str, AccountState] = {}
        self.pending_acks: list[Any] = []
        # Records settled at ingest, to ack with the next round: a dead letter or a forward to send,
        # or neither for a record applied in an earlier life.
        self.settled: list[tuple[Any, DeadLetter | None, Forward | None]] = []

    @classmethod
    def restore(cls, partition: int, blob: bytes, quality: bytes | None,
                spec: FeatureSpec | None = None) -> tuple[Checkpoint, Monitor, dict[str, AccountState]]:
        """The partition as its last snapshot left it: progress, monitor, and the states the snapshot carries
        (``spec``: the feature specification configured now)."""
        snap = pickle.loads(blob)
        monitor = Monitor.restore(snap["monitor"], quality, spec)
        applied = {}
        for cat, (low, extra) in snap["applied"].items():
            applied[cat] = OffsetSet(low)
            applied[cat].extra = set(extra)
        ckpt = cls(partition, applied, applied_ts=snap["applied_ts"], rounds=snap["rounds"])
        states = {key.decode(): orjson.loads(value) for key, value in snap["states"]}
        log.info("partition %d: resumed at round %d, %d outcomes learned, applied below %s",
                 partition, ckpt.rounds, monitor.outcomes_seen, {c: s.low for c, s in applied.items()})
        return ckpt, monitor, states

    # -- input offsets ------------------------------------------------------
    def seen(self, category: str, offset: int) -> tuple[str, int]:
        """Note a record delivered in this life.

        ``("new", lost)`` or ``("applied", lost)``: take it (``lost``: offsets the snapshot had not
        applied that will never come, counted when a resumed partition confirms a hole); ``("seek",
        offset)``: drop it unacked and fetch the topic partition again from ``offset``.

        A topic partition must deliver its records in offset order from where it resumes: the
        snapshot's applied low, or below it (a committed offset is never ahead of a confirmed
        snapshot, but Faust and aiokafka do not always start there). A record past offsets that
        were neither delivered nor applied means the consumer moved its position over them: seen
        under repeated rebalances, where a position from an earlier assignment came back and
        hundreds of records were skipped, their decisions lost and every later score changed.
        The input positions that count are the snapshot's, so the partition is sought back to the
        first offset missing. Only if the same record comes first again after that seek is there
        nothing between (transaction markers, or records retention deleted): those offsets count
        as done, and where the snapshot had not applied them, as lost.
        """
        done = self.applied.get(category)
        prev = self.last_offset.get(category)  # the highest offset delivered in this life
        if done is None:
            # Nothing applied or restored for this topic: the first record seen marks where this life starts.
            done = self.applied[category] = OffsetSet(offset)
        expected = done.low if prev is None else prev + 1
        lost = 0
        if offset > expected and done.missing_between(expected, offset):
            if category != "control" and self.refetch.get(category) != (expected, offset):
                first = self.refetch.get(category)
                if first is None or first[0] != expected or offset < first[1]:
                    self.refetch[category] = (expected, offset)
                return "seek", expected
            # It came first again from where the partition was sought back to (or a broadcast control
            # record, whose feed keeps every record in order): nothing lies between.
            if prev is None:
                lost = done.missing_between(expected, offset)
            done.add_range(expected, offset)
        self.refetch.pop(category, None)
        self.last_offset[category] = offset if prev is None else max(prev, offset)
        return ("applied" if offset in done else "new"), lost

    def settle(self, category: str, offset: int, handle: Any, dead: DeadLetter | None,
               forward: Forward | None = None) -> None:
        """A record done with at ingest (dead-lettered, refused here but dead-lettered by another partition,
        sent on to the partition that owns its account, or applied in an earlier life): acked with the next
        round, once what it sends is delivered."""
        self.applied[category].add(offset)  # (a record applied in an earlier life is in already: no change)
        self.settled.append((handle, dead, forward))

    def applied_low(self, category: str) -> int | None:
        """Every offset of ``category`` below this is applied (None: nothing seen or restored yet)."""
        done = self.applied.get(category)
        return None if done is None else done.low

    def next_offset(self, category: str) -> int:
        """The offset after the last one delivered in this life (0 before any)."""
        return self.last_offset.get(category, -1) + 1

    # -- rounds -------------------------------------------------------------
    def has_work(self) -> bool:
        return bool(self.settled)

    def begin(self, anchor: Any | None) -> Round:
        """A new round; it carries the dead letters settled since the last one, and will ack their records.

        ``anchor``: a handle of the partition's own records (a broadcast control record's is none:
        the host writes the table in the context of a record of this partition); without one, the
        latest settled or seen before.
        """
        if anchor is None or anchor is NO_ACK:
            anchor = next((h for h, _, _ in reversed(self.settled) if h is not NO_ACK), self.last_handle)
        self.last_handle = anchor
        rnd = Round(self.partition, anchor)
        for handle, dead, forward in self.settled:
            if dead is not None:
                rnd.dead.append(dead)
            if forward is not None:
                rnd.forwards.append(forward)
            self.pending_acks.append(handle)
        self.settled = []
        return rnd

    def applied_event(self, category: str, offset: int, ts: int, handle: Any) -> None:
        self.applied_ts = max(self.applied_ts, ts)
        self.applied[category].add(offset)
        self.pending_acks.append(handle)

    def stage(self, states: dict[str, AccountState]) -> None:
        """States a round changed: written with the next snapshot."""
        self.pending.update(states)

    def seal_due(self, now: float, every_s: float) -> bool:
        return (len(self.pending) >= MAX_ROUND_EVENTS or len(self.pending_acks) >= 20 * MAX_ROUND_EVENTS
                or now - self.sealed_at >= every_s)

    def idle_round(self, monitor: Monitor, now: float, every_s: float) -> Round | None:
        """With nothing new to apply, a round that only takes the snapshot that is due (None if none is)."""
        if (self.pending or self.pending_acks) and self.seal_due(now, every_s):
            rnd = Round(self.partition, self.last_handle)
            self.seal(rnd, monitor, now)
            return rnd
        return None

    def seal(self, rnd: Round, monitor: Monitor, now: float) -> None:
        """Make ``rnd`` carry the partition's snapshot, the states changed since the last one, and their acks."""
        rnd.states = [(aid.encode(), dumps(state)) for aid, state in self.pending.items()]
        rnd.acks = self.pending_acks
        self.pending, self.pending_acks, self.sealed_at = {}, [], now
        self.rounds += 1
        p = str(self.partition).encode()
        snap = {"monitor": monitor.dumps(with_quality=False), "applied_ts": self.applied_ts, "rounds": self.rounds,
                "applied": {c: (s.low, sorted(s.extra)) for c, s in self.applied.items()}, "states": rnd.states}
        rnd.snapshot.append((SHARD_KEY_PREFIX + p, pickle.dumps(snap, protocol=pickle.HIGHEST_PROTOCOL)))
        if self.rounds % QUALITY_EVERY_ROUNDS == 0:
            rnd.snapshot.append((QUALITY_KEY_PREFIX + p, monitor.dumps_quality()))
