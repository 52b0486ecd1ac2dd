"""What a worker does with records, free of Faust: decode, order, apply, emit.

Input arrives on four co-partitioned topics (control, lifecycle, transactions,
repayments). Per partition, accepted events wait in a buffer and apply in the
order replay uses (event time, category, offset) once no topic of that
partition can still deliver an earlier one: every topic has delivered a later
event or has nothing more to deliver. Events that arrive after later ones were
applied are applied at once and counted as late (the account clock never runs
back).

Per partition there is one :class:`models.monitor.Monitor` (one model), and
its snapshot is written to the state table before the account states of each
round, so a restarted worker resumes with the model it had. Events are acked
only once applied, so an event held in the buffer is never committed past.
"""
from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import orjson

from models.codec import decode, dumps
from models.errors import RejectReason, Rejected
from models.events import CATEGORY, CATEGORY_RANK, Event, PolicyUpdate
from models.monitor import Monitor
from models.policy import Policy
from models.state import AccountState

__all__ = ["Ports", "StreamProcessor", "Held", "SHARD_KEY_PREFIX"]

SHARD_KEY_PREFIX = b"__shard__:"
QUALITY_KEY_PREFIX = b"__quality__:"
QUALITY_EVERY_ROUNDS = 50
# How many ids of events whose outcomes the saved model learned it keeps.
_LEARNED_MEMORY = 4096


class Ports(Protocol):
    """What the processor needs from its host (the Faust app, or a test)."""

    def get(self, key: bytes) -> bytes | None: ...
    def put(self, handle: Any, key: bytes, value: bytes) -> None: ...
    def send_decision(self, handle: Any, account_id: str, value: bytes) -> None: ...
    def send_deadletter(self, handle: Any, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None: ...
    def ack(self, handle: Any) -> None: ...


@dataclass(order=True)
class Held:
    order: tuple[int, int, int]
    event: Event = field(compare=False)
    raw: bytes = field(compare=False)
    topic: str = field(compare=False)
    offset: int = field(compare=False)
    handle: Any = field(compare=False)


@dataclass
class _Shard:
    partition: int
    monitor: Monitor
    heap: list[Held] = field(default_factory=list)
    max_ts: dict[str, int] = field(default_factory=dict)
    last_offset: dict[str, int] = field(default_factory=dict)
    applied_ts: int = -1
    learned: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    rounds: int = 0
    states: dict[str, AccountState | None] = field(default_factory=dict)


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
    ) -> None:
        self.ports = ports
        self.policy = policy
        self.checkpoint_every = checkpoint_every
        self.bad_dpd = bad_dpd
        self.max_record_bytes = max_record_bytes
        self.on_decision = on_decision
        self.shards: dict[int, _Shard] = {}
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()
        self.latency_s: list[float] = []
        self._seq = itertools.count()

    # -- partitions -------------------------------------------------------
    def shard(self, partition: int) -> _Shard:
        sh = self.shards.get(partition)
        if sh is None:
            blob = self.ports.get(SHARD_KEY_PREFIX + str(partition).encode())
            if blob is not None:
                n = int.from_bytes(blob[:8], "big")
                learned = dict.fromkeys(orjson.loads(blob[8 : 8 + n]))
                monitor = Monitor.restore(blob[8 + n :], self.ports.get(QUALITY_KEY_PREFIX + str(partition).encode()))
            else:
                monitor = Monitor(f"p{partition}", self.policy, checkpoint_every=self.checkpoint_every, bad_dpd=self.bad_dpd)
                learned = {}
            sh = self.shards[partition] = _Shard(partition, monitor, learned=learned)
        return sh

    def revoke(self, partitions: set[int]) -> None:
        """Forget revoked partitions: their held events were never acked and go to the new owner."""
        for p in partitions:
            self.shards.pop(p, None)

    # -- records ----------------------------------------------------------
    def ingest(self, category: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, handle: Any) -> None:
        """Take one record: dead-letter it at once, or hold it for ordering."""
        raw = value or b""
        self.counts["received"] += 1
        try:
            event = decode(raw, self.max_record_bytes)
            if CATEGORY[event.type] != category:
                raise Rejected(RejectReason.WRONG_TOPIC, f"a {event.type} event on the {category} topic")
        except Rejected as r:
            self._deadletter(handle, topic, partition, offset, key, raw, r.reason.value, r.detail)
            self.ports.ack(handle)
            return
        sh = self.shard(partition)
        sh.max_ts[category] = max(sh.max_ts.get(category, event.ts), event.ts)
        sh.last_offset[category] = max(sh.last_offset.get(category, -1), offset)
        if event.ts < sh.applied_ts:
            self.counts["late"] += 1
        heapq.heappush(sh.heap, Held((event.ts, CATEGORY_RANK[category], offset), event, raw, topic, offset, handle))

    def release(self, partition: int, caught_up: Callable[[str], bool]) -> int:
        """Apply every held event of ``partition`` that no topic can still precede; return how many."""
        sh = self.shards.get(partition)
        if sh is None or not sh.heap:
            return 0
        bounds = [ts for cat, ts in ((c, sh.max_ts.get(c)) for c in CATEGORY_RANK) if not caught_up(cat)]
        if any(b is None for b in bounds):
            return 0  # a topic that has not delivered yet and may still
        watermark = min((b for b in bounds if b is not None), default=None)
        ready: list[Held] = []
        while sh.heap and (watermark is None or sh.heap[0].order[0] <= watermark):
            ready.append(heapq.heappop(sh.heap))
        if ready:
            self._apply_round(sh, ready)
        return len(ready)

    def held(self) -> int:
        return sum(len(sh.heap) for sh in self.shards.values())

    # -- internals --------------------------------------------------------
    def _apply_round(self, sh: _Shard, ready: list[Held]) -> None:
        t0 = time.perf_counter()
        writes: dict[str, tuple[Any, AccountState]] = {}
        out: list[tuple[Any, str, bytes]] = []
        dead: list[tuple[Held, str, str]] = []
        learned_before = sh.learned
        learned_now: dict[str, None] = {}
        for h in ready:
            ev = h.event
            sh.applied_ts = max(sh.applied_ts, ev.ts)
            try:
                if isinstance(ev, PolicyUpdate):
                    sh.monitor.control(ev)
                    self.counts["applied"] += 1
                    continue
                aid = ev.account_id
                state = writes[aid][1] if aid in writes else self._state(sh, aid)
                result = sh.monitor.apply(state, ev, learn=ev.event_id not in learned_before)
            except Rejected as r:
                dead.append((h, r.reason.value, r.detail))
                continue
            except Exception as exc:  # a poison record must not stop the partition
                dead.append((h, RejectReason.INTERNAL_ERROR.value, f"{type(exc).__name__}: {str(exc)[:200]}"))
                continue
            if result.duplicate:
                self.counts["duplicate"] += 1
                continue
            self.counts["applied"] += 1
            if result.outcomes:
                learned_now[ev.event_id] = None
            writes[aid] = (h.handle, result.state)
            for d in result.decisions:
                body = d.to_dict()
                self.decisions[d.action] += 1
                out.append((h.handle, aid, dumps(body)))
                if self.on_decision is not None:
                    self.on_decision(body)
            if sh.monitor.checkpoint_due:
                sh.monitor.checkpoint()
        # The model first, then the accounts: a crash in between leaves a model
        # that already learned the round, and the ids below stop it learning twice.
        merged = {**learned_before, **learned_now}
        sh.learned = merged if len(merged) <= _LEARNED_MEMORY else dict.fromkeys(list(merged)[-_LEARNED_MEMORY:])
        ids = orjson.dumps(list(sh.learned))
        anchor = ready[-1].handle
        self.ports.put(anchor, SHARD_KEY_PREFIX + str(sh.partition).encode(),
                       len(ids).to_bytes(8, "big") + ids + sh.monitor.dumps(with_quality=False))
        sh.rounds += 1
        if sh.rounds % QUALITY_EVERY_ROUNDS == 0:
            self.ports.put(anchor, QUALITY_KEY_PREFIX + str(sh.partition).encode(), sh.monitor.dumps_quality())
        for aid, (handle, state) in writes.items():
            sh.states[aid] = state
            self.ports.put(handle, aid.encode(), dumps(state))
        for handle, aid, value in out:
            self.ports.send_decision(handle, aid, value)
        for h, reason, detail in dead:
            self._deadletter(h.handle, h.topic, sh.partition, h.offset, h.event.account_id.encode(), h.raw, reason, detail)
        for h in ready:
            self.ports.ack(h.handle)
        self.latency_s.append(time.perf_counter() - t0)

    def _state(self, sh: _Shard, aid: str) -> AccountState | None:
        if aid in sh.states:
            return sh.states[aid]
        blob = self.ports.get(aid.encode())
        state = None if blob is None else orjson.loads(blob)
        sh.states[aid] = state
        return state

    def _deadletter(self, handle: Any, topic: str, partition: int, offset: int, key: bytes | None, raw: bytes,
                    reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        headers = [("riskmon-reason", reason.encode()), ("riskmon-detail", detail.encode()[:512]),
                   ("riskmon-topic", topic.encode()), ("riskmon-partition", str(partition).encode()),
                   ("riskmon-offset", str(offset).encode())]
        self.ports.send_deadletter(handle, key, raw, headers)

