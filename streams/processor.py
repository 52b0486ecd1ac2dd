"""What a worker does with records, free of Faust: it orchestrates three pieces.

- decoding and typed rejection of each record (the codec, and the checks only a
  stream can make: the right topic, not dated far ahead of the clock);
- the event-time hold (:mod:`streams.hold`): accepted events of a partition wait
  until no topic can still deliver an earlier one, then apply in replay's order;
  an event that arrives after later ones were applied is late: applied at once
  and counted (the account clock never runs back), or with ``late="deadletter"``
  dead-lettered as ``late_event``;
- the durable-commit order (:mod:`streams.checkpoint`): offsets applied, states
  and acks waiting for the next snapshot, and resuming from a snapshot.

Each partition has one :class:`riskmon.models.monitor.Monitor` (one model), and
every event goes through its one entry point, ``Monitor.process``, as in replay.
Applying events gives :class:`streams.checkpoint.Round` objects, which the host
makes durable in the order that module states.
"""
from __future__ import annotations

import copy
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import orjson

from riskmon.models.codec import decode, dumps, format_ts
from riskmon.models.errors import RejectReason, Rejected
from riskmon.models.events import CATEGORY, event_order, is_broadcast
from riskmon.models.featurespec import FeatureSpec
from riskmon.models.monitor import Monitor
from riskmon.models.partitioning import partition_for
from riskmon.models.policy import Policy
from riskmon.models.portfolio import PORTFOLIO_BY_DEFAULT, Revealed, in_force
from riskmon.models.risk_model import RiskModel
from riskmon.models.state import AccountState
from riskmon.models.step import StepResult

from .checkpoint import MAX_ROUND_EVENTS, NO_ACK, NO_TIME, QUALITY_KEY_PREFIX, SHARD_KEY_PREFIX, Checkpoint, DeadLetter, Round
from .hold import QUIET_S, SOURCES, EventTimeHold, Held
from .trainer import IDLE_S, ModelBook, outcome_record, watermark_record

__all__ = ["HotMetrics", "Options", "Ports", "StreamProcessor", "score_band"]

log = logging.getLogger("riskmon.processor")


class Ports(Protocol):
    """What the processor needs from its host (the Faust app, or a test)."""

    def get(self, key: bytes) -> bytes | None: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...

    def observe_many(self, amounts: Iterable[float]) -> None: ...


class HotMetrics(Protocol):
    """The distributions observed on the hot path (streams.metrics.Metrics has them)."""

    processing: Histogram
    event_time_lag: Histogram
    score: Histogram


@dataclass(frozen=True)
class Options:
    """How the processor judges and orders records (the worker's settings pass them through)."""

    policy: Policy | None = None  # the policy in force from the start (None: the shipped default)
    spec: FeatureSpec | None = None  # the features the model sees (None: the shipped specification)
    checkpoint_every: int = 500  # outcomes learned between model versions
    model: RiskModel | None = None  # every partition starts from a copy of it (a model file's), not from nothing
    model_base: str = ""  # that model file's version, leading every model version the partitions make
    bad_dpd: int = 30  # days past due that make an instalment a bad outcome
    max_record_bytes: int = 16_384
    lateness_s: float = 0.0  # event-time disorder applied in order (see streams.hold)
    late: str = "apply"  # or "deadletter": what becomes of an event later than that
    # An event dated far ahead would hold its partition's event-time order hostage: every later
    # arrival would be late. The wall clock bounds it here (replay, offline, has no clock to ask).
    max_future_s: float | None = None
    max_held: int = 100_000  # events a partition holds for ordering before the earliest go ahead
    quiet_s: float = QUIET_S  # how long a caught-up topic delivers nothing before it stops holding the others back
    # A snapshot (model, offsets, states) per round costs a pickled model per partition every fetch
    # at low rates. With snapshot_every_s > 0, rounds in between only deliver their decisions; the
    # next snapshot carries their states and acks their records. A crash redoes them (same decisions,
    # same ids: delivered again, never lost).
    snapshot_every_s: float = 0.0
    # The input topics' partition count: an account event on a partition its account does not belong
    # to (by Kafka's murmur2 partitioner, as replay shards) is sent on to the one it does (None: no check).
    partitions: int | None = None
    # One model for the portfolio (streams.trainer): partitions score with the versions a trainer publishes, and
    # send it their outcomes; False: each partition learns its own model.
    portfolio: bool = PORTFOLIO_BY_DEFAULT

    def __post_init__(self) -> None:
        if self.late not in ("apply", "deadletter"):
            raise ValueError(f"late must be 'apply' or 'deadletter', not {self.late!r}")


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
    checkpoint: Checkpoint
    hold: EventTimeHold
    states: dict[str, AccountState | None] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)  # restored from a snapshot, to be written again
    # With the portfolio's model (streams.trainer): the boundary of the version the shard scores with, the
    # time of an event waiting for the version in force at it, the last watermark sent (None: idle; the
    # partition's last event time before any), and when the partition last took a record (time.monotonic()).
    model_at: int | None = None
    blocked: int | None = None
    reported: int | None = -1
    quiet_since: float = 0.0

    @property
    def applied_ts(self) -> int:
        return self.checkpoint.applied_ts

    @property
    def saved_at(self) -> float:
        return self.checkpoint.saved_at


class _Lookup:
    """Account states as a round sees them: written in this round, else the shard's, else the table's."""

    __slots__ = ("ports", "shard", "writes")

    def __init__(self, ports: Ports, shard: _Shard, writes: dict[str, AccountState]) -> None:
        self.ports, self.shard, self.writes = ports, shard, writes

    def get(self, aid: str, /) -> AccountState | None:
        state = self.writes.get(aid)
        if state is not None:
            return state
        states = self.shard.states
        if aid in states:
            return states[aid]
        blob = self.ports.get(aid.encode())
        loaded: AccountState | None = None if blob is None else orjson.loads(blob)
        states[aid] = loaded
        return loaded


class StreamProcessor:
    """Per-partition ordering and application of records; the Faust agent is a thin shell around it."""

    def __init__(self, ports: Ports, options: Options | None = None, *, metrics: HotMetrics | None = None,
                 on_decision: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.ports = ports
        self.options = options or Options()
        self.metrics = metrics
        self.on_decision = on_decision
        o = self.options
        self.max_future_ms = None if o.max_future_s is None else int(o.max_future_s * 1000)
        self.shards: dict[int, _Shard] = {}
        # Counts since this worker started; streams.metrics exports them at scrape time.
        self.counts: Counter[str] = Counter()
        self.events: Counter[tuple[str, str]] = Counter()  # (event type or "unknown", accepted|rejected|duplicate)
        self.rejected: Counter[tuple[str, str]] = Counter()  # (input topic category, reason)
        self.decisions: Counter[tuple[str, str]] = Counter()  # (action, first reason code)
        self.shadow_decisions: Counter[tuple[str, str]] = Counter()  # a candidate policy's in shadow: (version, action)
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (score band, default|good)
        self.outcome_scores: Counter[str] = Counter()  # score band -> sum of the scores graded
        self._owners: dict[str, int] = {}  # account -> the input partition that owns it
        # (topic, partition) -> the offset the host must seek it back to (take_seeks), the records from
        # there were never delivered
        self.seeks: dict[tuple[str, int], int] = {}
        # With one model for the portfolio: the versions the trainer published (the host fills it from the
        # model topic); None: each partition learns its own model.
        self.book: ModelBook | None = ModelBook() if o.portfolio else None

    # -- partitions -------------------------------------------------------
    def shard(self, partition: int) -> _Shard:
        sh = self.shards.get(partition)
        if sh is None:
            o = self.options
            hold = EventTimeHold(o.lateness_s, o.max_held, o.quiet_s)
            p = str(partition).encode()
            blob = self.ports.get(SHARD_KEY_PREFIX + p)
            if blob is not None:
                ckpt, monitor, states = Checkpoint.restore(partition, blob, self.ports.get(QUALITY_KEY_PREFIX + p), o.spec)
                sh = _Shard(partition, monitor, ckpt, hold, dict(states), set(states))
            else:
                monitor = Monitor(f"p{partition}", o.policy, None if o.model is None else copy.deepcopy(o.model),
                                  checkpoint_every=o.checkpoint_every, bad_dpd=o.bad_dpd, spec=o.spec,
                                  model_base=o.model_base)
                sh = _Shard(partition, monitor, Checkpoint(partition), hold)
                log.info("partition %d: starting afresh", partition)
            self.shards[partition] = sh
        return sh

    def revoke(self, partitions: set[int]) -> None:
        """Forget revoked partitions: their held events were never acked and go to the new owner."""
        for p in partitions:
            if self.shards.pop(p, None) is not None:
                log.info("partition %d: revoked", p)

    def applied_low(self, partition: int, category: str) -> int | None:
        """Every offset of the partition's ``category`` topic below this is applied (None: not known here)."""
        sh = self.shards.get(partition)
        return None if sh is None else sh.checkpoint.applied_low(category)

    def take_seeks(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) for each input the host must fetch again from that offset, once each.

        The records ingest dropped for it were never acked; they come again after the seek."""
        out = [(topic, p, offset) for (topic, p), offset in self.seeks.items() if p in self.shards]
        self.seeks.clear()
        return out

    def next_offset(self, partition: int, category: str) -> int:
        """The offset after the last record of that topic partition delivered to this worker (0 before any)."""
        sh = self.shards.get(partition)
        return 0 if sh is None else sh.checkpoint.next_offset(category)

    # -- records ----------------------------------------------------------
    def ingest(self, category: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
               handle: Any, headers: Any = None) -> None:
        """Take one record: skip it if applied before, dead-letter it, or hold it for ordering.

        ``headers`` (a record's Kafka headers, pairs or a mapping) matter only on the repartition
        topic: they name where the record was first put, which is what a dead letter of it names.
        """
        raw = value or b""
        origin = _origin(headers) if category == "repartition" else None
        # What a dead letter names: the topic, partition and offset the producer put the record at.
        dl_topic, dl_partition, dl_offset = origin or (topic, partition, offset)
        received = time.monotonic()
        self.counts["received"] += 1
        sh = self.shard(partition)
        sh.quiet_since = received
        ckpt = sh.checkpoint
        if ckpt.last_handle is None and handle is not NO_ACK:
            ckpt.last_handle = handle  # a round of broadcast control records alone writes in its context
        verdict, n = ckpt.seen(category, offset)
        if verdict == "seek":
            # Records before this one were never delivered: fetch them again (Checkpoint.seen).
            self.counts["refetched"] += 1
            if (topic, partition) not in self.seeks:
                log.warning("partition %d: %s offset %d came before offset %d was delivered: fetching again from %d",
                            partition, category, offset, n, n)
            self.seeks[(topic, partition)] = n
            return
        if n:
            self.counts["offset_gap"] += n
            log.error("partition %d: %s resumes at offset %d, fetched again from its snapshot's, but %d offsets "
                      "before it that the snapshot had not applied never came (deleted, or transaction markers)",
                      partition, category, offset, n)
        if verdict == "applied":
            self.counts["redelivered"] += 1
            ckpt.settle(category, offset, handle, None)
            return
        etype = "unknown"
        try:
            event = decode(raw, self.options.max_record_bytes)
            etype = event.type
            if category != "repartition" and CATEGORY[event.type] != category:
                raise Rejected(RejectReason.WRONG_TOPIC, f"a {event.type} event on the {category} topic")
            # Not for control records: every partition must judge one alike, and the clock differs by
            # worker and by when a partition reads the record (a restart reads it again).
            if self.max_future_ms is not None and category != "control" and event.ts > time.time() * 1000 + self.max_future_ms:
                raise Rejected(RejectReason.FUTURE_EVENT, f"event time {format_ts(event.ts)} is more than "
                                                          f"{self.max_future_ms / 1000:g} s ahead of this worker's clock")
        except Rejected as r:
            ckpt.settle(category, offset, handle, self._deadletter(
                category, etype, dl_topic, dl_partition, dl_offset, key, raw, r.reason.value, r.detail))
            return
        except Exception as exc:  # the codec promises Rejected only; a record must not stop the worker if it breaks that
            ckpt.settle(category, offset, handle, self._deadletter(
                category, etype, dl_topic, dl_partition, dl_offset, key, raw, RejectReason.INTERNAL_ERROR.value,
                f"{type(exc).__name__}: {str(exc)[:200]}"))
            return
        sh.hold.delivered(category, event.ts, received)
        parts = self.options.partitions
        if parts is not None and not is_broadcast(event):
            owner = self._owners.get(event.account_id)
            if owner is None:  # murmur2 in Python costs microseconds; an account's partition never changes
                if len(self._owners) >= 1_000_000:
                    self._owners.clear()
                owner = self._owners[event.account_id] = partition_for(event.account_id, parts)
            if owner != partition:
                # A producer with another partitioner (librdkafka's CRC32) put it here: it must apply
                # in its account's partition, in order with the rest of the account's events.
                self.counts["rerouted"] += 1
                headers = [("riskmon-topic", topic.encode()), ("riskmon-partition", str(partition).encode()),
                           ("riskmon-offset", str(offset).encode())]
                ckpt.settle(category, offset, handle, None, (owner, key, raw, headers))
                return
        if event.ts < ckpt.applied_ts:
            self.counts["late"] += 1
            if self.options.late == "deadletter" and category != "control":  # (a late control record applies everywhere)
                detail = (f"event time {format_ts(event.ts)} is before {format_ts(ckpt.applied_ts)}, already applied "
                          f"in this partition (allowed lateness {self.options.lateness_s:g} s)")
                ckpt.settle(category, offset, handle, self._deadletter(
                    category, etype, dl_topic, dl_partition, dl_offset, key, raw, RejectReason.LATE_EVENT.value, detail))
                return
        if self.metrics is not None:
            self.metrics.event_time_lag.observe(time.time() - event.ts / 1000)
        sh.hold.push(Held(event_order(event.ts, event.type, offset), event, raw, category, topic, offset, handle, received,
                          origin))

    def release(self, partition: int, caught_up: Callable[[str], bool], now: float | None = None) -> list[Round]:
        """Apply every held event of ``partition`` that no topic can still precede, in bounded rounds.

        ``now`` (time.monotonic() by default) times the wait of events once every topic is caught up.
        """
        sh = self.shards.get(partition)
        if sh is None:
            return []
        now = time.monotonic() if now is None else now
        ready, forced = sh.hold.release(caught_up, now)
        self.counts["forced"] += forced
        if ready:
            rounds = []
            for i in range(0, len(ready), MAX_ROUND_EVENTS):
                rounds.append(self._round(sh, ready[i : i + MAX_ROUND_EVENTS], now))
                if sh.blocked is not None:  # the rest went back to the hold, to wait for the model in force at them
                    for h in ready[i + MAX_ROUND_EVENTS:]:
                        sh.hold.push(h)
                    break
            return rounds
        if sh.checkpoint.has_work():
            return [self._round(sh, [], now)]
        rnd = sh.checkpoint.idle_round(sh.monitor, now, self.options.snapshot_every_s)
        if (self.book is not None and sh.reported is not None and not sh.hold and now - sh.quiet_since >= IDLE_S
                and all(caught_up(c) for c in SOURCES if c != "control")):
            # Nothing to apply and nothing new for a while: the trainer need not wait for this partition.
            rnd = rnd or Round(partition, sh.checkpoint.last_handle)
            rnd.training.append(watermark_record(partition, None))
            sh.reported = None
        return [] if rnd is None else [rnd]

    def held(self) -> int:
        return sum(len(sh.hold) for sh in self.shards.values())

    def saved(self, rnd: Round) -> None:
        """The host made ``rnd`` durable: its events are done."""
        sh = self.shards.get(rnd.partition)
        if sh is not None and rnd.snapshot:
            sh.checkpoint.saved_at = time.time()
        if self.metrics is not None and rnd.received:
            now = time.monotonic()
            self.metrics.processing.observe_many([now - t for t in rnd.received])

    # -- internals --------------------------------------------------------
    def _round(self, sh: _Shard, ready: list[Held], now: float) -> Round:
        ckpt = sh.checkpoint
        rnd = ckpt.begin(next((h.handle for h in reversed(ready) if h.handle is not NO_ACK), None))
        writes: dict[str, AccountState] = {}
        lookup = _Lookup(self.ports, sh, writes)
        book = self.book
        sh.blocked = None
        for i, h in enumerate(ready):
            ev = h.event
            if book is not None:
                b = in_force(ev.ts)
                if b != sh.model_at:
                    got = book.at(b)
                    if got is None:  # the trainer has not published the model in force at it yet
                        sh.blocked = ev.ts
                        for rest in ready[i:]:
                            sh.hold.push(rest)
                        break
                    sh.monitor.adopt(got[1], got[0])
                    sh.model_at = b
            ckpt.applied_event(h.category, h.offset, ev.ts, h.handle)
            rnd.received.append(h.received)
            try:
                results = sh.monitor.process(ev, lookup)
            except Exception as exc:  # a refused record, or a poison one: it must not stop the partition
                reason, detail = ((exc.reason.value, exc.detail) if isinstance(exc, Rejected) else
                                  (RejectReason.INTERNAL_ERROR.value, f"{type(exc).__name__}: {str(exc)[:200]}"))
                dead = self._held_deadletter(sh, h, reason, detail)
                if dead is not None:
                    rnd.dead.append(dead)
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
                if book is not None and result.outcomes:
                    rnd.training.append(outcome_record(sh.partition, Revealed(
                        ev.ts, result.state["id"], tuple(result.outcomes), ev.event_id)))
        if book is not None:
            # Every outcome revealed before this time is sent: the events before it are applied.
            mark = sh.blocked if sh.blocked is not None else ckpt.applied_ts
            if mark != sh.reported and mark > NO_TIME:
                rnd.training.append(watermark_record(sh.partition, mark))
                sh.reported = mark
        for aid in sh.dirty - writes.keys():
            state = sh.states.get(aid)
            if state is not None:
                writes[aid] = state
        sh.dirty.clear()
        sh.states.update(writes)
        ckpt.stage(writes)
        if ckpt.seal_due(now, self.options.snapshot_every_s):
            ckpt.seal(rnd, sh.monitor, now)
        return rnd

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
        for d in result.shadow or ():
            self.shadow_decisions[(d.policy_version, d.action)] += 1
            rnd.shadow.append((aid, dumps(d.to_dict())))

    def _held_deadletter(self, sh: _Shard, h: Held, reason: str, detail: str) -> DeadLetter | None:
        """A held event the core refused, named by where its producer put it (counted in its own category)."""
        ev = h.event
        topic, partition, offset = h.origin or (h.topic, sh.partition, h.offset)
        category = CATEGORY[ev.type] if h.origin else h.category
        return self._deadletter(category, ev.type, topic, partition, offset, ev.account_id.encode(), h.raw, reason, detail)

    def _deadletter(self, category: str, etype: str, topic: str, partition: int, offset: int, key: bytes | None, raw: bytes,
                    reason: str, detail: str) -> DeadLetter | None:
        """The dead letter of a refused record, counted; None for a control record refused in a partition but 0.

        Every partition applies every control record (streams.control), so every partition refuses a bad
        one: partition 0 dead-letters it and counts it for all of them (its one partition is 0 too).
        """
        if category == "control" and partition != 0:
            return None
        self.rejected[(category, reason)] += 1
        self.events[(etype, "rejected")] += 1
        headers = [("riskmon-reason", reason.encode()), ("riskmon-detail", detail.encode()[:512]),
                   ("riskmon-topic", topic.encode()), ("riskmon-partition", str(partition).encode()),
                   ("riskmon-offset", str(offset).encode())]
        return (key, raw, headers)


def _origin(headers: Any) -> tuple[str, int, int] | None:
    """(topic, partition, offset) from the provenance headers a rerouted record carries; None without them.

    >>> _origin([("riskmon-topic", b"t.transactions"), ("riskmon-partition", b"2"), ("riskmon-offset", b"17")])
    ('t.transactions', 2, 17)
    >>> _origin({"riskmon-topic": b"t"}) is None
    True
    """
    if not headers:
        return None
    h = dict(headers.items() if hasattr(headers, "items") else headers)
    try:
        return h["riskmon-topic"].decode(), int(h["riskmon-partition"]), int(h["riskmon-offset"])
    except (KeyError, ValueError, UnicodeDecodeError, AttributeError):
        return None
