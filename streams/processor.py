"""What a worker does with records, free of Faust: decode, order, apply, emit.

Input arrives on four co-partitioned topics (control, lifecycle, transactions,
repayments). Per partition, accepted events wait in a buffer and apply in the
order replay uses (event time, category, offset) once no topic of that
partition can still deliver an earlier one: every topic has delivered an event
``lateness`` later, or has nothing more to deliver (then an event waits
``lateness`` of wall-clock time, so a quiet live feed still flows). So events
out of order by up to ``lateness`` apply in event-time order, exactly as replay
applies them. An event that arrives after later ones were applied is late: it
is applied at once and counted (the account clock never runs back), or with
``late="deadletter"`` dead-lettered as ``late_event``.

Each partition has one :class:`models.monitor.Monitor` (one model). Applying
events gives a :class:`Round`, which the host makes durable in this order:
decisions and dead letters delivered; the partition's snapshot written (one
record, so all or nothing: the model, the policy timeline, the input offsets
applied, and the account states the round changed); the account states written
under their own keys; the input acked. A worker killed at any point resumes
from the last snapshot: it restores the states the snapshot carries (an account
key written after it is the same state), skips input offsets it records as
applied and redoes the rest exactly. Decisions of a round whose snapshot was
lost are delivered again, with the same ids. This holds only if what a restarted
worker reads is a prefix of these writes in this order: a host whose store
outlives the process must not let it run ahead of the log (``streams.app``: a
rocksdb store takes a record only once the broker has it).
"""
from __future__ import annotations

import heapq
import logging
import pickle
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import orjson

from riskmon.models.codec import decode, dumps, format_ts
from riskmon.models.errors import RejectReason, Rejected
from riskmon.models.events import CATEGORY, CATEGORY_RANK, Event, event_order
from riskmon.models.monitor import Monitor
from riskmon.models.policy import Policy
from riskmon.models.state import AccountState
from riskmon.models.step import StepResult


__all__ = ["Ports", "StreamProcessor", "Held", "Round", "OffsetSet", "SHARD_KEY_PREFIX", "QUALITY_KEY_PREFIX"]

log = logging.getLogger("riskmon.processor")

SHARD_KEY_PREFIX = b"__shard__:"
QUALITY_KEY_PREFIX = b"__quality__:"
QUALITY_EVERY_ROUNDS = 50
# A round's snapshot record carries the states it changed (up to ~1 KB each):
# 256 events keep it far below Kafka's 1 MB default record limit. A batch of
# 1,000 new accounts in one round made a 1.66 MB record and the producer crashed.
MAX_ROUND_EVENTS = 256


class Ports(Protocol):
    """What the processor needs from its host (the Faust app, or a test)."""

    def get(self, key: bytes) -> bytes | None: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class HotMetrics(Protocol):
    """The distributions observed on the hot path (streams.metrics.Metrics has them)."""

    processing: Histogram
    event_time_lag: Histogram
    score: Histogram


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

    def missing_below(self, offset: int) -> int:
        """How many offsets under ``offset`` are not in the set."""
        return max(offset - self.low, 0) - sum(1 for o in self.extra if o < offset)

    def _raise_low(self, low: int) -> None:
        """Everything below ``low`` is in; so is any run of ``extra`` that now joins it."""
        self.low = low
        while self.low in self.extra:
            self.extra.discard(self.low)
            self.low += 1

    def __contains__(self, offset: int) -> bool:
        return offset < self.low or offset in self.extra


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


@dataclass
class Round:
    """The output of one round in one partition, in the order it must be made durable."""

    partition: int
    anchor: Any  # a handle from this partition (the host writes the table in its context)
    decisions: list[tuple[str, bytes]] = field(default_factory=list)
    dead: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    states: list[tuple[bytes, bytes]] = field(default_factory=list)
    snapshot: list[tuple[bytes, bytes]] = field(default_factory=list)
    acks: list[Any] = field(default_factory=list)
    received: list[float] = field(default_factory=list)  # arrival times of the events applied


# Outcomes are graded in these score bands (upper edges) for the calibration metric.
SCORE_BANDS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def score_band(score: float | None) -> str:
    """The calibration band of a graded score: its upper edge, or "unscored" before the model was warm.

    >>> score_band(0.03), score_band(1.0), score_band(None)
    ('0.05', '1', 'unscored')
    """
    if score is None:
        return "unscored"
    for edge in SCORE_BANDS:
        if score <= edge:
            return f"{edge:g}"
    return "1"


@dataclass
class _Shard:
    partition: int
    monitor: Monitor
    applied: dict[str, OffsetSet] = field(default_factory=dict)
    heap: list[Held] = field(default_factory=list)
    max_ts: dict[str, int] = field(default_factory=dict)
    last_offset: dict[str, int] = field(default_factory=dict)
    applied_ts: int = -1
    rounds: int = 0
    states: dict[str, AccountState | None] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)  # restored from a snapshot, to be written again
    saved_at: float = 0.0  # time.time() when the host last made a snapshot of this partition durable
    # Applied since the last snapshot: the states to write with the next one, and the records it will ack.
    pending: dict[str, AccountState] = field(default_factory=dict)
    pending_acks: list[Any] = field(default_factory=list)
    sealed_at: float = 0.0  # time.monotonic() of the last snapshot
    last_handle: Any = None  # a handle from this partition, for a round that only seals
    # Records settled at ingest, to ack with the next round: a dead letter to send, or None
    # for a record applied in an earlier life.
    settled: list[tuple[Any, tuple[bytes | None, bytes, list[tuple[str, bytes]]] | None]] = field(default_factory=list)


class _Lookup:
    """Account states as a round sees them: written in this round, else the shard's, else the table's."""

    __slots__ = ("proc", "shard", "writes")

    def __init__(self, proc: StreamProcessor, shard: _Shard, writes: dict[str, AccountState]) -> None:
        self.proc, self.shard, self.writes = proc, shard, writes

    def get(self, aid: str, /) -> AccountState | None:
        state = self.writes.get(aid)
        return state if state is not None else self.proc._state(self.shard, aid)


class StreamProcessor:
    """Per-partition ordering and application of records; the Faust agent is a thin shell around it."""

    def __init__(
        self,
        ports: Ports,
        policy: Policy | None = None,
        checkpoint_every: int = 500,
        bad_dpd: int = 30,
        max_record_bytes: int = 16_384,
        on_decision: Callable[[dict[str, Any]], None] | None = None,
        metrics: HotMetrics | None = None,
        lateness_s: float = 0.0,
        late: str = "apply",
        max_future_s: float | None = None,
        max_held: int = 100_000,
        snapshot_every_s: float = 0.0,
    ) -> None:
        if late not in ("apply", "deadletter"):
            raise ValueError(f"late must be 'apply' or 'deadletter', not {late!r}")
        self.ports = ports
        self.policy = policy
        self.checkpoint_every = checkpoint_every
        self.bad_dpd = bad_dpd
        self.max_record_bytes = max_record_bytes
        self.on_decision = on_decision
        self.metrics = metrics
        self.lateness_ms = int(lateness_s * 1000)
        self.lateness_s = lateness_s
        self.late = late
        # An event dated far ahead would hold its partition's event-time order hostage: every later
        # arrival would be late. The wall clock bounds it here (replay, offline, has no clock to ask).
        self.max_future_ms = None if max_future_s is None else int(max_future_s * 1000)
        # Events wait for the slowest topic of their partition; if it falls far behind, memory is
        # bounded here: the earliest waiting events go ahead (a straggler from it will then be late).
        self.max_held = max_held
        # A snapshot (model, offsets, states) per round costs a pickled model per partition every fetch
        # at low rates. With snapshot_every_s > 0, rounds in between only deliver their decisions; the
        # next snapshot carries their states and acks their records. A crash redoes them (same decisions,
        # same ids: delivered again, never lost).
        self.snapshot_every_s = snapshot_every_s
        self.shards: dict[int, _Shard] = {}
        # Counts since this worker started; streams.metrics exports them at scrape time.
        self.counts: Counter[str] = Counter()
        self.events: Counter[tuple[str, str]] = Counter()  # (event type or "unknown", accepted|rejected|duplicate)
        self.rejected: Counter[tuple[str, str]] = Counter()  # (input topic category, reason)
        self.decisions: Counter[tuple[str, str]] = Counter()  # (action, first reason code)
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (score band, default|good)
        self.outcome_scores: Counter[str] = Counter()  # score band -> sum of the scores graded

    # -- partitions -------------------------------------------------------
    def shard(self, partition: int) -> _Shard:
        sh = self.shards.get(partition)
        if sh is None:
            blob = self.ports.get(SHARD_KEY_PREFIX + str(partition).encode())
            if blob is not None:
                snap = pickle.loads(blob)
                monitor = Monitor.restore(snap["monitor"], self.ports.get(QUALITY_KEY_PREFIX + str(partition).encode()))
                applied = {}
                for cat, (low, extra) in snap["applied"].items():
                    applied[cat] = OffsetSet(low)
                    applied[cat].extra = set(extra)
                sh = _Shard(partition, monitor, applied, applied_ts=snap["applied_ts"], rounds=snap["rounds"])
                for key, value in snap["states"]:
                    sh.states[key.decode()] = orjson.loads(value)
                    sh.dirty.add(key.decode())
                log.info("partition %d: resumed at round %d, %d outcomes learned, applied below %s",
                         partition, sh.rounds, monitor.outcomes_seen, {c: s.low for c, s in applied.items()})
            else:
                monitor = Monitor(f"p{partition}", self.policy, checkpoint_every=self.checkpoint_every, bad_dpd=self.bad_dpd)
                sh = _Shard(partition, monitor)
                log.info("partition %d: starting afresh", partition)
            self.shards[partition] = sh
        return sh

    def revoke(self, partitions: set[int]) -> None:
        """Forget revoked partitions: their held events were never acked and go to the new owner."""
        for p in partitions:
            if self.shards.pop(p, None) is not None:
                log.info("partition %d: revoked", p)

    # -- records ----------------------------------------------------------
    def ingest(self, category: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, handle: Any) -> None:
        """Take one record: skip it if applied before, dead-letter it, or hold it for ordering."""
        raw = value or b""
        received = time.monotonic()
        self.counts["received"] += 1
        sh = self.shard(partition)
        done = sh.applied.get(category)
        prev = sh.last_offset.get(category)  # the record before this one in this life
        sh.last_offset[category] = offset if prev is None else max(prev, offset)
        if done is None:
            # Records of a topic partition arrive in offset order: the first one
            # seen marks where this life starts.
            done = sh.applied[category] = OffsetSet(offset)
        elif prev is not None:
            if offset > prev + 1:
                # No record lies between two delivered in order (transaction markers): nothing to apply there.
                done.add_range(prev + 1, offset)
        elif offset > done.low:
            # The first record of this life lies beyond what the snapshot applied: the offsets
            # between were committed without a snapshot that covers them, and will not come again.
            gap = done.missing_below(offset)
            if gap:
                self.counts["offset_gap"] += gap
                log.error("partition %d: %s resumes at offset %d, but its snapshot applied only below %d: %d offsets "
                          "were committed without a snapshot (or hold transaction markers)", partition, category, offset,
                          done.low, gap)
        if offset in done:
            self.counts["redelivered"] += 1
            sh.settled.append((handle, None))
            return
        etype = "unknown"
        try:
            event = decode(raw, self.max_record_bytes)
            etype = event.type
            if CATEGORY[event.type] != category:
                raise Rejected(RejectReason.WRONG_TOPIC, f"a {event.type} event on the {category} topic")
            if self.max_future_ms is not None and event.ts > time.time() * 1000 + self.max_future_ms:
                raise Rejected(RejectReason.FUTURE_EVENT, f"event time {format_ts(event.ts)} is more than "
                                                          f"{self.max_future_ms / 1000:g} s ahead of this worker's clock")
        except Rejected as r:
            done.add(offset)
            sh.settled.append((handle, self._deadletter(category, etype, topic, partition, offset, key, raw, r.reason.value, r.detail)))
            return
        except Exception as exc:  # the codec promises Rejected only; a record must not stop the worker if it breaks that
            done.add(offset)
            sh.settled.append((handle, self._deadletter(category, etype, topic, partition, offset, key, raw,
                                                        RejectReason.INTERNAL_ERROR.value, f"{type(exc).__name__}: {str(exc)[:200]}")))
            return
        sh.max_ts[category] = max(sh.max_ts.get(category, event.ts), event.ts)
        if event.ts < sh.applied_ts:
            self.counts["late"] += 1
            if self.late == "deadletter":
                done.add(offset)
                detail = (f"event time {format_ts(event.ts)} is before {format_ts(sh.applied_ts)}, already applied "
                          f"in this partition (allowed lateness {self.lateness_s:g} s)")
                sh.settled.append((handle, self._deadletter(category, etype, topic, partition, offset, key, raw,
                                                            RejectReason.LATE_EVENT.value, detail)))
                return
        if self.metrics is not None:
            self.metrics.event_time_lag.observe(time.time() - event.ts / 1000)
        heapq.heappush(sh.heap, Held(event_order(event.ts, event.type, offset), event, raw, category, topic, offset, handle, received))

    def release(self, partition: int, caught_up: Callable[[str], bool], now: float | None = None) -> list[Round]:
        """Apply every held event of ``partition`` that no topic can still precede, in bounded rounds.

        ``now`` (time.monotonic() by default) times the wait of events once every topic is caught up.
        """
        sh = self.shards.get(partition)
        if sh is None:
            return []
        now = time.monotonic() if now is None else now
        ready: list[Held] = []
        if sh.heap:
            bounds = [sh.max_ts.get(c) for c in CATEGORY_RANK if not caught_up(c)]
            if all(b is not None for b in bounds):
                watermark = min((b for b in bounds if b is not None), default=None)
                if watermark is not None:
                    watermark -= self.lateness_ms
                    while sh.heap and sh.heap[0].order[0] <= watermark:
                        ready.append(heapq.heappop(sh.heap))
                else:  # nothing more to deliver now: wait out the lateness on the wall clock
                    cutoff = now - self.lateness_s
                    while sh.heap and (not self.lateness_s or sh.heap[0].received <= cutoff):
                        ready.append(heapq.heappop(sh.heap))
            while len(sh.heap) > self.max_held:
                ready.append(heapq.heappop(sh.heap))
                self.counts["forced"] += 1
        if ready:
            return [self._round(sh, ready[i : i + MAX_ROUND_EVENTS], now) for i in range(0, len(ready), MAX_ROUND_EVENTS)]
        if sh.settled:
            return [self._round(sh, [], now)]
        if (sh.pending or sh.pending_acks) and self._seal_due(sh, now):  # nothing new: the last rounds' snapshot is due
            rnd = Round(sh.partition, sh.last_handle)
            self._seal(sh, rnd, now)
            return [rnd]
        return []

    def held(self) -> int:
        return sum(len(sh.heap) for sh in self.shards.values())

    def saved(self, rnd: Round) -> None:
        """The host made ``rnd`` durable: its events are done."""
        sh = self.shards.get(rnd.partition)
        if sh is not None and rnd.snapshot:
            sh.saved_at = time.time()
        if self.metrics is not None and rnd.received:
            now = time.monotonic()
            observe = self.metrics.processing.observe
            for t in rnd.received:
                observe(now - t)

    # -- internals --------------------------------------------------------
    def _round(self, sh: _Shard, ready: list[Held], now: float) -> Round:
        anchor = ready[-1].handle if ready else sh.settled[-1][0]
        sh.last_handle = anchor
        rnd = Round(sh.partition, anchor)
        for handle, dead in sh.settled:
            if dead is not None:
                rnd.dead.append(dead)
            sh.pending_acks.append(handle)
        sh.settled = []
        writes: dict[str, AccountState] = {}
        lookup = _Lookup(self, sh, writes)
        for h in ready:
            ev = h.event
            sh.applied_ts = max(sh.applied_ts, ev.ts)
            sh.applied[h.category].add(h.offset)
            sh.pending_acks.append(h.handle)
            rnd.received.append(h.received)
            try:
                results = sh.monitor.process(ev, lookup)
            except Rejected as r:
                rnd.dead.append(self._deadletter(h.category, ev.type, h.topic, sh.partition, h.offset, ev.account_id.encode(),
                                                 h.raw, r.reason.value, r.detail))
                continue
            except Exception as exc:  # a poison record must not stop the partition
                rnd.dead.append(self._deadletter(h.category, ev.type, h.topic, sh.partition, h.offset, ev.account_id.encode(), h.raw,
                                                 RejectReason.INTERNAL_ERROR.value, f"{type(exc).__name__}: {str(exc)[:200]}"))
                continue
            if results and all(r.duplicate for r in results):
                self.counts["duplicate"] += 1
                self.events[(ev.type, "duplicate")] += 1
                continue
            self.counts["applied"] += 1
            self.events[(ev.type, "accepted")] += 1
            for result in results:
                if result.scored and self.metrics is not None:
                    self.metrics.score.observe(result.state["score"])
                self._emit(rnd, writes, result)
                if result.drift:
                    self.counts["drift"] += 1
        for aid in sh.dirty - writes.keys():
            state = sh.states.get(aid)
            if state is not None:
                writes[aid] = state
        sh.dirty.clear()
        for aid, state in writes.items():
            sh.states[aid] = state
            sh.pending[aid] = state
        if self._seal_due(sh, now):
            self._seal(sh, rnd, now)
        return rnd

    def _seal_due(self, sh: _Shard, now: float) -> bool:
        return (len(sh.pending) >= MAX_ROUND_EVENTS or len(sh.pending_acks) >= 20 * MAX_ROUND_EVENTS
                or now - sh.sealed_at >= self.snapshot_every_s)

    def _seal(self, sh: _Shard, rnd: Round, now: float) -> None:
        """Make ``rnd`` carry the partition's snapshot, the states changed since the last one, and their acks."""
        rnd.states = [(aid.encode(), dumps(state)) for aid, state in sh.pending.items()]
        rnd.acks = sh.pending_acks
        sh.pending, sh.pending_acks, sh.sealed_at = {}, [], now
        sh.rounds += 1
        p = str(sh.partition).encode()
        snap = {"monitor": sh.monitor.dumps(with_quality=False), "applied_ts": sh.applied_ts, "rounds": sh.rounds,
                "applied": {c: (s.low, sorted(s.extra)) for c, s in sh.applied.items()}, "states": rnd.states}
        rnd.snapshot.append((SHARD_KEY_PREFIX + p, pickle.dumps(snap, protocol=pickle.HIGHEST_PROTOCOL)))
        if sh.rounds % QUALITY_EVERY_ROUNDS == 0:
            rnd.snapshot.append((QUALITY_KEY_PREFIX + p, sh.monitor.dumps_quality()))

    def _emit(self, rnd: Round, writes: dict[str, AccountState], result: StepResult) -> None:
        """One applied result: its state to write, its decisions to send, its outcomes counted."""
        aid = result.state["id"]
        writes[aid] = result.state
        for o in result.outcomes:
            band = score_band(o.score)
            self.outcomes[(band, "default" if o.default else "good")] += 1
            self.outcome_scores[band] += o.score or 0.0
        for d in result.decisions:
            body = d.to_dict()
            self.decisions[(d.action, d.reasons[0].code if d.reasons else "none")] += 1
            rnd.decisions.append((aid, dumps(body)))
            if self.on_decision is not None:
                self.on_decision(body)

    def _state(self, sh: _Shard, aid: str) -> AccountState | None:
        if aid in sh.states:
            return sh.states[aid]
        blob = self.ports.get(aid.encode())
        state = None if blob is None else orjson.loads(blob)
        sh.states[aid] = state
        return state

    def _deadletter(self, category: str, etype: str, topic: str, partition: int, offset: int, key: bytes | None, raw: bytes,
                    reason: str, detail: str) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
        self.rejected[(category, reason)] += 1
        self.events[(etype, "rejected")] += 1
        headers = [("riskmon-reason", reason.encode()), ("riskmon-detail", detail.encode()[:512]),
                   ("riskmon-topic", topic.encode()), ("riskmon-partition", str(partition).encode()),
                   ("riskmon-offset", str(offset).encode())]
        return (key, raw, headers)
