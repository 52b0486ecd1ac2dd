"""The Faust app: topics, the state table, one agent over the account topics, the control feed.

The agent stays thin: records go to :class:`streams.processor.StreamProcessor`,
which calls back here to read and write the table, send decisions and dead
letters, and ack. :class:`Worker` wires them together with named methods; every
touch of Faust's internals goes through :mod:`streams.faust_internals`.
"""
from __future__ import annotations

import asyncio
import copy
import functools
import logging
import time
from typing import Any, Callable

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.types import TP
from prometheus_client import CollectorRegistry

from riskmon.models.features import default_spec, load_spec
from riskmon.models.model_file import load_model
from riskmon.models.policy import load_policy
from riskmon.models.portfolio import Portfolio
from riskmon.models.risk_model import RiskModel

from . import faust_internals
from .checkpoint import NO_ACK, Round
from .control import ControlFeed
from .metrics import Metrics
from .processor import Options, StreamProcessor
from .settings import Settings
from .stall import StallWatch
from .topics import client_config, start_client
from .trainer import IDLE_S, ModelBook, TrainerLoop, watermark_record

__all__ = ["FaustPorts", "Worker", "build_app"]

log = logging.getLogger("riskmon.app")

# aiokafka's send waits, once a partition's batch is full, until the sender takes that
# batch. A seal sends a snapshot carrying up to 256 states and then those states (~300 KB);
# at the default 16 KB batch the agent waited for one batch after another, and decisions
# with it (p50 137-181 ms at 3,066 events/s; 79-81 ms with this). Below Kafka's default
# 1 MB record-batch limit.
PRODUCER_BATCH_BYTES = 512 * 1024
# Faust's own table writes queue in its producer buffer; at its default of 100 messages
# every round stalled on it (and logged "producer buffer full").
PRODUCER_BUFFER_MESSAGES = 20_000
# How often events held for event-time order are looked at when no record arrives to wake them.
HOLD_WAKE_S = 0.2
STALL_CHECK_S = 1.0  # how often owned partitions are checked for a stall (streams/stall.py)
SILENT_S = 5.0  # an input partition with records on the broker and none delivered this long is fetched again
# How long a rebalance waits for the snapshots this worker sent to be confirmed before it lets its
# partitions go (see Worker.let_go); past it, the records they cover stay unacked and are redone.
SETTLE_S = 5.0


class FaustPorts:
    def __init__(self, app: Any, table: Any, decisions: Any, deadletter: Any, repartition: Any, training: Any = None,
                 shadow: Any = None) -> None:
        self.app, self.table, self.decisions, self.deadletter = app, table, decisions, deadletter
        self.shadow = shadow  # the shadow decisions topic (a candidate policy's; riskmon.models.shadow)
        self.repartition = repartition
        self.training = training  # the portfolio trainer's input (streams.trainer); None: a model per partition
        self._epoch: dict[int, int] = {}  # partition -> revocations seen
        self._unconfirmed: set[asyncio.Future[Any]] = set()  # rounds sent, not yet confirmed (and so not acked)

    def get(self, key: bytes) -> bytes | None:
        return self.table.get(key)  # type: ignore[no-any-return]

    async def write(self, rnd: Round) -> None:
        """Make a round durable in the order the processor's recovery relies on; the caller then calls ``proc.saved``."""
        sent = [await self.decisions.send(key=aid.encode(), value=value) for aid, value in rnd.decisions]
        sent += [await self.shadow.send(key=aid.encode(), value=value) for aid, value in rnd.shadow]
        sent += [await self.deadletter.send(key=key, value=value, headers=headers) for key, value, headers in rnd.dead]
        sent += [await self.repartition.send(key=key, value=value, headers=headers, partition=owner)
                 for owner, key, value, headers in rnd.forwards]
        # The round's outcomes, then its watermark, in order on the training topic's one partition.
        sent += [await self.training.send(value=value, partition=0) for value in rnd.training]
        if sent:
            await asyncio.gather(*sent)  # delivered before the snapshot can say "applied"
        # The snapshot first: it carries the round's states too.
        written = await self._put_all(rnd.partition, rnd.anchor, rnd.snapshot + rnd.states)
        if rnd.acks:
            # Ack once the broker has the snapshot, not when it is queued: Faust commits acked
            # offsets after a producer flush that gives up when one message takes over 0.1 s, so
            # an offset could be committed ahead of the snapshot that says it was applied, and a
            # worker killed then would never see those records again.
            acks, epoch = rnd.acks, self._epoch.get(rnd.partition, 0)

            def durable(fut: asyncio.Future[Any]) -> None:
                if fut.cancelled() or fut.exception() is not None:
                    log.error("partition %d: snapshot not written (%r); %d records stay unacked and will be redone",
                              rnd.partition, None if fut.cancelled() else fut.exception(), len(acks))
                    return
                if self._epoch.get(rnd.partition, 0) != epoch:
                    return  # revoked since: Faust forgot its offsets, and the next owner redoes these records
                for handle in acks:
                    handle.ack()

            confirmed = asyncio.gather(*written)
            confirmed.add_done_callback(durable)
            self._unconfirmed.add(confirmed)
            confirmed.add_done_callback(self._unconfirmed.discard)

    async def settle(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) until every round sent is confirmed: its records acked, its states in
        the local store."""
        if self._unconfirmed:
            await asyncio.wait(list(self._unconfirmed), timeout=timeout_s)

    async def _put_all(self, partition: int, anchor: Any, items: list[tuple[bytes, bytes]]) -> list[asyncio.Future[Any]]:
        """``table[key] = value`` for each item, in order; the changelog sends' futures (resolved when the broker has them).

        What Faust's ``table[key] = value`` does, less its per-record machinery, and with
        one change of order. Faust queues each changelog record in its producer buffer as a
        FutureMessage for a background task to publish, through sensors and a debug log line
        (about a fifth of the worker's time in a py-spy profile). Here each record goes
        straight to the producer Faust would use (its transaction manager under
        exactly_once), to the changelog partition Faust would pick (the input partition:
        tables are co-partitioned with their stream).

        The order: Faust writes the local store at once, before the broker has the record.
        A rocksdb store survives a kill -9, so it could then hold a round the broker never
        got; on restart Faust replays the changelog only from the last confirmed offset, over
        those local writes, and could leave an older snapshot beside newer account keys (seen
        once in 5 kill -9 runs: 130 of 284 decisions changed). So the local store takes a
        record when the broker confirms it, with its offset (:meth:`_on_sent`): what it holds
        is always a prefix of the changelog. While it owns a partition the worker never reads
        back what it wrote (the processor keeps every state it applied); a partition that
        comes back after a revocation is read after Faust's recovery has replayed the broker's
        changelog into the store.
        """
        producer, topic = await faust_internals.changelog_producer(self.app, self.table)
        epoch = self._epoch.get(partition, 0)
        futures = []
        for key, value in items:
            fut = await producer.send(topic, key, value, partition, None, None)
            fut.add_done_callback(functools.partial(self._on_sent, partition, epoch, anchor, key, value))
            futures.append(fut)
        return futures

    def _on_sent(self, partition: int, epoch: int, anchor: Any, key: bytes, value: bytes, fut: asyncio.Future[Any]) -> None:
        """A changelog record the broker confirmed: into the local store, with its offset."""
        if fut.cancelled() or fut.exception() is not None:
            return  # the round's ``durable`` callback reports it
        if self._epoch.get(partition, 0) != epoch:
            return  # revoked since: recovery replays it from the broker when the partition comes back
        faust_internals.store_confirmed(self.app, self.table, anchor, key, value, fut.result())

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked: confirmations of their earlier writes no longer touch the local store."""
        for p in partitions:
            self._epoch[p] = self._epoch.get(p, 0) + 1


def _credentials(settings: Settings) -> Any:
    cfg = client_config(settings)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=cfg["sasl_plain_username"], password=cfg["sasl_plain_password"],
            mechanism=cfg["sasl_mechanism"], ssl_context=cfg.get("ssl_context"),
        )
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(cfg["ssl_context"])
    return None


class Worker:
    """One worker's Faust app, its processor, and the handlers that connect them.

    The agent applies each batch of records; a task releases events that wait
    for event-time order when nothing else would wake them; another reads the
    control topic and hands it to every partition held here; the rebalance
    handlers drop partitions this worker no longer owns. All of them take one
    lock, so a round never interleaves with another or with a rebalance.
    """

    def __init__(self, settings: Settings, bootstrap: str, on_decision: Callable[[dict[str, Any]], None] | None = None) -> None:
        if settings.broker_kind == "tansu":
            from . import tansu_fetch_wait, tansu_list_offsets

            tansu_list_offsets.install(bootstrap, **client_config(settings))
            tansu_fetch_wait.install()
        faust_internals.install_direct_delivery()
        faust_internals.refetch_dropped_records()
        settings.datadir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.app = app = faust.App(
            settings.app_id,
            broker=[f"kafka://{h}" for h in bootstrap.split(",")],
            broker_credentials=_credentials(settings),
            store=settings.store,
            datadir=str(settings.datadir),
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            consumer_auto_offset_reset="earliest",
            processing_guarantee=settings.processing_guarantee,
            web_bind=settings.web_host,
            web_port=settings.web_port,
            web_host=settings.web_host,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=settings.heartbeat_s,
            producer_linger=0.005,
            producer_max_batch_size=PRODUCER_BATCH_BYTES,
            stream_buffer_maxsize=max(4096, settings.batch_size * 2),
            logging_config=None,
        )
        faust_internals.set_producer_buffer(app, PRODUCER_BUFFER_MESSAGES)
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        # Each source a partition merges (see streams.hold.SOURCES) -> its topic. The group splits the
        # account topics by partition; the control topic is read whole by every worker (streams.control).
        self.topics = {**settings.input_topics, "repartition": settings.topic_repartition}
        self.category_of = {t: c for c, t in self.topics.items()}
        inputs = app.topic(*(t for c, t in self.topics.items() if c != "control"), partitions=settings.partitions, **raw)
        self.control = ControlFeed(settings, bootstrap)
        repartition = app.topic(settings.topic_repartition, partitions=settings.partitions, **raw)
        decisions = app.topic(settings.topic_decisions, partitions=settings.partitions, **raw)
        shadow = app.topic(settings.topic_shadow_decisions, partitions=settings.partitions, **raw)
        deadletter = app.topic(settings.topic_deadletter, partitions=settings.partitions, **raw)
        table = app.Table("accounts", default=None, partitions=settings.partitions, key_type=bytes, value_type=bytes)
        self.portfolio = settings.model_scope == "portfolio"
        training = app.topic(settings.topic_training, partitions=1, **raw) if self.portfolio else None
        self.ports = FaustPorts(app, table, decisions, deadletter, repartition, training, shadow)
        # /metrics on the worker's web port: riskmon's metrics and Faust's sensors, one registry.
        registry = CollectorRegistry()
        setup_prometheus_sensors(app, registry=registry, name_prefix="riskmon_faust")
        metrics = Metrics(registry)
        spec = load_spec(settings.features_file) if settings.features_file else None
        model, info = load_model(settings.model_file, (spec or default_spec()).names) if settings.model_file else (None, None)
        if model is None and settings.learner != "logistic":
            model = RiskModel(learner=settings.learner)
        if info is not None:
            log.warning("partitions without a snapshot start from %s", info.line())
        options = Options(
            policy=load_policy(settings.policy_file) if settings.policy_file else None,
            spec=spec, model=model, model_base=info.version if info is not None else "",
            checkpoint_every=settings.checkpoint_every, bad_dpd=settings.bad_dpd,
            max_record_bytes=settings.max_record_bytes, lateness_s=settings.lateness_s, late=settings.late_events,
            max_future_s=settings.max_future_s, snapshot_every_s=settings.snapshot_every_s,
            partitions=settings.partitions, portfolio=self.portfolio,
        )
        self.proc = StreamProcessor(self.ports, options, metrics=metrics, on_decision=on_decision)
        if self.portfolio:
            # One model for the portfolio: this worker reads its versions, and may be the one that trains it.
            self.book = self.proc.book
            self.models = ControlFeed(settings, bootstrap, topic=settings.topic_models)
            start = Portfolio(None if model is None else copy.deepcopy(model), spec, options.model_base)
            self.trainer = TrainerLoop(settings, bootstrap, self.book, self.control, settings.partitions, start)
            self._quiet: dict[int, float] = {}  # owned partitions with no shard yet: since when each is caught up
            self._idle_sent: set[int] = set()
        self.lock = asyncio.Lock()
        self.owned: set[int] = set()  # input partitions this worker holds now
        self.stall = StallWatch(settings.stall_s)
        # (partition, topic category) -> (the next offset it needs, since when it has stood there, said so):
        # each input partition with records on the broker past that offset (restart_silent_inputs)
        self._waiting: dict[tuple[int, str], tuple[int, float, bool]] = {}
        metrics.watch(self.proc, self.lag, lambda: len(self.owned), lambda: (self.stall.stalled_seconds(), self.stall.limit_s))
        app.agent(inputs, name="riskmon.monitor")(self.monitor)
        app.task(self.release_held_every)
        app.task(self.watch_stalls)
        app.task(self.follow_control)
        if self.portfolio:
            app.task(self.follow_models)
            app.task(self.train)
        faust_internals.before_revocation_waits(app, self.let_go)
        app.on_partitions_revoked.connect(self.on_revoked)
        app.on_partitions_assigned.connect(self.on_assigned)

    def lag(self) -> list[tuple[str, int, int]]:
        """(topic, partition, records not yet applied) for each input partition owned."""
        out = []
        for p in sorted(self.owned):
            for category, topic in self.topics.items():
                if category == "control":
                    hw = self.control.highwater()
                    if hw is not None:
                        out.append((topic, p, max(hw - self._control_next(p), 0)))
                    continue
                tp = TP(topic, p)
                hw = self.app.consumer.highwater(tp)
                if hw is None or hw < 0:
                    continue
                low = self.proc.applied_low(p, category)
                if low is None:
                    low = faust_internals.committed_offset(self.app, tp)
                out.append((topic, p, max(hw - low, 0)))
        return out

    def positions(self, partition: int) -> str:
        """Where each topic of ``partition`` stands against what the broker holds: what a stall waits for."""
        out = []
        for category, topic in self.topics.items():
            if category == "control":
                hw = self.control.highwater()
                where = f"read to {self.control.position}" if self.control.reading else "not being read"
                out.append(f"control {where}, next {self._control_next(partition)}, end {hw}")
                continue
            tp = TP(topic, partition)
            not_fetched = faust_internals.fetch_state(self.app, tp)
            out.append(f"{category} next {self.proc.next_offset(partition, category)}, committed "
                       f"{faust_internals.committed_offset(self.app, tp)}, end {self.app.consumer.highwater(tp)}"
                       + (f" (not fetched: {not_fetched})" if not_fetched else ""))
        return "; ".join(out)

    def _positions_or_why(self, partition: int) -> str:
        try:
            return self.positions(partition)
        except Exception as exc:  # noqa: BLE001 - the stall must be said whatever the consumer's state
            return f"positions unknown: {exc!r}"

    def caught_up(self, partition: int) -> Callable[[str], bool]:
        """Whether a topic of ``partition`` has delivered everything the broker holds now."""

        def check(category: str) -> bool:
            if category == "control":
                return self.control.caught_up(self._control_next(partition))
            tp = TP(self.topics[category], partition)
            hw = self.app.consumer.highwater(tp)
            if hw is None or hw < 0:
                return False
            # Faust seeks to the committed offset on assignment: records before it
            # were applied in an earlier life and will not be delivered again.
            committed = faust_internals.committed_offset(self.app, tp)
            return max(self.proc.next_offset(partition, category), committed) >= hw

        return check

    async def write(self, rnd: Round) -> None:
        await self.ports.write(rnd)
        self.proc.saved(rnd)

    async def monitor(self, stream: Any) -> None:
        """The agent: apply each batch of records, then make durable what it released."""
        batches = faust_internals.agent_batches(self.app, stream, self.settings.batch_size)
        while True:
            try:
                events = await batches()
            except StopAsyncIteration:  # the worker is stopping
                return
            await self.apply(events)
            # Nothing of the batch may stay referenced from here while the agent waits for the next:
            # a record the hold let go of in a rebalance must be free to leave Faust's weak set of
            # unacked records (see faust_internals.before_revocation_waits).
            del events

    async def apply(self, events: list[Any]) -> None:
        """Ingest a batch, then release and make durable what it frees."""
        async with self.lock:
            touched = set()
            for ev in events:
                m = ev.message
                if m.partition not in self.owned:
                    # Fetched before a rebalance took the partition away: the new
                    # owner gets it again (never acked here); applying it would
                    # write over the new owner's state.
                    self.proc.counts["not_owned"] += 1
                    continue
                self.proc.ingest(self.category_of[m.topic], m.topic, m.partition, m.offset, m.key, m.value, ev,
                                 m.headers)
                touched.add(m.partition)
            for topic, p, offset in self.proc.take_seeks():
                try:
                    await faust_internals.seek_back(self.app, TP(topic, p), offset)
                except Exception as exc:  # taken away meanwhile: its next owner starts from the snapshot anyway
                    log.warning("could not seek %s[%d] back to %d: %r", topic, p, offset, exc)
            self.dispatch_control()
            for p in touched:
                for rnd in self.proc.release(p, self.caught_up(p)):
                    await self.write(rnd)

    async def release_held_every(self) -> None:
        """Wake :meth:`release_held` every HOLD_WAKE_S after the last wake-up ended (a Faust task takes no
        arguments of its own).

        Not a Faust timer: one that waits for the lock while a big round is made durable runs past its
        interval, and Faust's timer then logs "Timer ... is overlapping" on every such tick."""
        while True:
            await asyncio.sleep(HOLD_WAKE_S)
            await self.release_held()

    async def watch_stalls(self) -> None:
        """Check for stalled partitions every STALL_CHECK_S, without the lock: a stall is most often a round
        waiting, lock held, for writes the broker does not confirm."""
        while True:
            await asyncio.sleep(STALL_CHECK_S)
            self.check_stalls(time.monotonic())
            if not self.lock.locked():  # never wait for it here: a round can hold it as long as a stall lasts
                async with self.lock:  # as apply seeks: no record is taken between reading an offset and the seek
                    await self.restart_silent_inputs(time.monotonic())

    async def restart_silent_inputs(self, now: float) -> None:
        """Fetch again an owned input partition that the broker holds records of past the next one this life
        needs, when none of them has come for SILENT_S.

        The consumer's position and Faust's "already read" mark can move past records that were never
        delivered (seen under repeated kills: a partition's lifecycle topic stuck at 239 of 247 for a
        minute while its other topics' 8,441 events waited for it, then lost). A record that comes after a
        hole is caught when it arrives (``Checkpoint.seen``); this catches the hole nothing arrives after.
        Fetching again from the next offset needed costs one seek and is a no-op where nothing was lost."""
        for p in sorted(self.owned):
            for category, topic in self.topics.items():
                if category == "control":
                    continue
                tp = TP(topic, p)
                end = self.app.consumer.highwater(tp)
                need = max(self.proc.next_offset(p, category), faust_internals.committed_offset(self.app, tp))
                key = (p, category)
                if end is None or end <= need:
                    self._waiting.pop(key, None)  # nothing is missing
                    continue
                waiting = self._waiting.get(key)
                if waiting is None or waiting[0] != need:  # a record came (or the partition just fell behind)
                    self._waiting[key] = (need, now, False)
                    continue
                _, since, said = waiting
                if now - since < SILENT_S:
                    continue
                try:
                    resumed = faust_internals.resume_fetching(self.app, tp)
                except Exception as exc:  # noqa: BLE001 - the consumer is between states
                    resumed = f"could not resume: {exc!r}"
                if not said:
                    log.warning("partition %d: %s offsets %d..%d are on the broker and none came for %.0f s: "
                                "fetching again from %d%s", p, category, need, end - 1, now - since,
                                need, f" (it was not fetched: {resumed})" if resumed else "")
                self._waiting[key] = (need, now, True)
                self.proc.counts["silent_refetch"] += 1
                try:
                    await faust_internals.seek_back(self.app, tp, need)
                except Exception as exc:  # noqa: BLE001 - taken away meanwhile, or the consumer is between states
                    log.debug("could not fetch %s[%d] again from %d: %r", topic, p, need, exc)

    def check_stalls(self, now: float) -> None:
        """Say, once, when an owned partition has had input waiting and nothing applied for RISKMON_STALL_S."""
        waiting: dict[int, int] = {p: 0 for p in self.owned}
        for _, p, n in self.lag():
            waiting[p] = waiting.get(p, 0) + n
        marks = {p: (n, tuple(self.proc.applied_low(p, c) for c in self.topics)) for p, n in waiting.items()}
        stalled, moved = self.stall.observe(marks, now)
        for p, n, seconds in stalled:
            sh = self.proc.shards.get(p)
            log.warning("partition %d is stalled: %d input records wait and nothing has been applied for %.0f s "
                        "(%d events held for event-time order; %s); see the RiskmonPartitionStalled runbook",
                        p, n, seconds, len(sh.hold) if sh is not None else 0, self._positions_or_why(p))
        for p, seconds in moved:
            log.warning("partition %d moves again after %.0f s stalled", p, seconds)

    async def release_held(self) -> None:
        """Held events wait for a topic to catch up; nothing else may wake them."""
        async with self.lock:
            self.dispatch_control()
            for p in list(self.proc.shards):
                for rnd in self.proc.release(p, self.caught_up(p)):
                    await self.write(rnd)
            if self.portfolio:
                await self.report_idle(time.monotonic())

    async def report_idle(self, now: float) -> None:
        """An owned partition that has had no record in this life (so no shard), caught up on its account
        topics for IDLE_S: the trainer need not wait for it (a shard reports for itself, see the processor)."""
        for p in sorted(self.owned - set(self.proc.shards) - self._idle_sent):
            check = self.caught_up(p)
            if not all(check(c) for c in self.topics if c != "control"):
                self._quiet.pop(p, None)
                continue
            if now - self._quiet.setdefault(p, now) >= IDLE_S:
                await asyncio.gather(await self.ports.training.send(value=watermark_record(p, None), partition=0))
                self._idle_sent.add(p)

    async def follow_models(self) -> None:
        """Read the model topic as the trainer publishes versions, and apply what waited for them."""
        await _start_retrying(self.models, "model topic %s not readable, nothing is scored until it is: %s")
        records = self.models.records
        added = 0
        try:
            while True:
                if await self.models.poll():
                    for i in range(added, len(records)):
                        offset, _, value = records[i]
                        self.book.add(value or b"")
                        records[i] = (offset, None, None)  # the book keeps what it said
                    added = len(records)
                    await self.release_held()
        finally:
            await self.models.stop()

    async def models_read(self) -> None:
        """Until the model topic is read to its end (a trainer resumes from its last record)."""
        while True:
            hw = self.models.highwater()
            if hw is not None and self.models.position >= hw:
                return
            await asyncio.sleep(0.1)

    async def train(self) -> None:
        """Train the portfolio's model when the group gives this worker the training partition."""
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.trainer.bootstrap, acks="all",
                                    max_request_size=2 * 1024 * 1024, **client_config(self.settings))
        while True:
            try:
                await start_client(producer, self.settings, self.trainer.bootstrap)
                break
            except ConnectionError as exc:
                log.error("trainer: broker not reachable: %s", exc)
                await asyncio.sleep(1.0)
        try:
            await self.trainer.run(producer, self.models_read)
        finally:
            await producer.stop()

    def _control_next(self, partition: int) -> int:
        """The control offset ``partition`` needs next: after what it was handed in this life, or what its snapshot applied."""
        return max(self.proc.next_offset(partition, "control"), self.proc.applied_low(partition, "control") or 0)

    def dispatch_control(self) -> None:
        """Hand each partition held here the control records it has not had yet (the caller holds the lock)."""
        if not self.control.records:
            return
        topic = self.control.topic
        for p in list(self.proc.shards):
            for offset, key, value in self.control.since(self._control_next(p)):
                self.proc.ingest("control", topic, p, offset, key, value, NO_ACK)

    async def follow_control(self) -> None:
        """Read the control topic as it grows, and apply what came in every partition held here.

        Until it is read, no partition applies anything (an unread control topic may hold a policy
        update that governs the next event), so a broker that refuses it is retried, loudly."""
        await _start_retrying(self.control, "control topic %s not readable, nothing is applied until it is: %s")
        try:
            while True:
                if await self.control.poll():
                    await self.release_held()  # hands the new records over, then applies what they free
        finally:
            await self.control.stop()

    def drop(self, partitions: set[int]) -> None:
        """Partitions this worker no longer owns: their shards go, and late confirmations of their writes
        no longer touch the local store (both, always: see FaustPorts._put_all)."""
        self.ports.forget(partitions)
        self.proc.revoke(partitions)

    async def let_go(self, revoked: set[Any]) -> None:
        """A rebalance is revoking ``revoked``: drop them now, with the events held for them (never acked),
        or the rebalance waits for those forever (see faust_internals.before_revocation_waits). First the
        rounds already sent are confirmed, as Faust's wait would have had them: their records acked (the
        commit that follows covers them) and their states in the local store, which a partition that
        comes back here resumes from. The ``on_partitions_revoked`` signal that follows finds them gone."""
        async with self.lock:
            await self.ports.settle(SETTLE_S)
            self._revoke(revoked)

    async def on_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        async with self.lock:
            self._revoke(revoked)

    def _revoke(self, revoked: set[Any]) -> None:
        gone = {tp.partition for tp in revoked if tp.topic in self.category_of}
        self.owned.difference_update(gone)
        self.drop(gone)
        if self.portfolio:
            self._idle_sent.difference_update(gone)

    async def on_assigned(self, sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        async with self.lock:
            mine = {tp.partition for tp in assigned if tp.topic in self.category_of}
            self.drop(set(self.proc.shards) - mine)
            self.owned.clear()
            self.owned.update(mine)


async def _start_retrying(feed: Any, message: str) -> None:
    """Start a feed that reads a topic whole (control, models), retrying every second, loudly, while the
    broker refuses it (``message`` takes the topic and the error)."""
    while True:
        try:
            await feed.start()
            return
        except ConnectionError as exc:
            log.error(message, feed.topic, exc)
            await asyncio.sleep(1.0)


def build_app(settings: Settings, bootstrap: str, on_decision: Callable[[dict[str, Any]], None] | None = None) -> tuple[faust.App, StreamProcessor]:
    worker = Worker(settings, bootstrap, on_decision)
    return worker.app, worker.proc
