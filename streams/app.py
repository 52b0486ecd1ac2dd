"""The Faust app: topics, the state table, one agent over the four input topics.

The agent stays thin: records go to :class:`streams.processor.StreamProcessor`,
which calls back here to read and write the table, send decisions and dead
letters, and ack.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import weakref
from typing import Any, Awaitable, Callable, Iterator

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.streams import _current_event  # a rocksdb store writes to the partition of the "current" event
from faust.types import TP

from riskmon.models.policy import load_policy

from prometheus_client import CollectorRegistry

from . import faust_drain
from .metrics import Metrics
from .processor import Round, StreamProcessor
from .settings import Settings
from .topics import client_config

__all__ = ["build_app"]

log = logging.getLogger("riskmon.app")

# aiokafka's send waits, once a partition's batch is full, until the sender takes that
# batch. A seal sends a snapshot carrying up to 256 states and then those states (~300 KB);
# at the default 16 KB batch the agent waited for one batch after another, and decisions
# with it (p50 137-181 ms at 3,066 events/s; 79-81 ms with this). Below Kafka's default
# 1 MB record-batch limit.
PRODUCER_BATCH_BYTES = 512 * 1024


@contextlib.contextmanager
def _as_event(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event, so a table write lands in its partition.

    Records of one round all come from one partition, but the round may run in
    a timer or after a batch that mixed partitions.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class FaustPorts:
    def __init__(self, app: Any, table: Any, decisions: Any, deadletter: Any) -> None:
        self.app, self.table, self.decisions, self.deadletter = app, table, decisions, deadletter
        self._epoch: dict[int, int] = {}  # partition -> revocations seen

    def get(self, key: bytes) -> bytes | None:
        return self.table.get(key)  # type: ignore[no-any-return]

    async def write(self, rnd: Round) -> None:
        """Make a round durable in the order the processor's recovery relies on; the caller then calls ``proc.saved``."""
        sent = [await self.decisions.send(key=aid.encode(), value=value) for aid, value in rnd.decisions]
        sent += [await self.deadletter.send(key=key, value=value, headers=headers) for key, value, headers in rnd.dead]
        if sent:
            await asyncio.gather(*sent)  # delivered before the snapshot can say "applied"
        # The snapshot first: it carries the round's states too.
        written = await self._put_all(rnd.partition, rnd.anchor, rnd.snapshot + rnd.states)
        if rnd.acks:
            # Ack once the broker has the snapshot, not when it is queued: Faust commits acked
            # offsets after a producer flush that gives up when one message takes over 0.1 s, so
            # an offset could be committed ahead of the snapshot that says it was applied, and a
            # worker killed then would never see those records again.
            acks = rnd.acks

            def durable(fut: asyncio.Future[Any]) -> None:
                if fut.cancelled() or fut.exception() is not None:
                    log.error("partition %d: snapshot not written (%r); %d records stay unacked and will be redone",
                              rnd.partition, None if fut.cancelled() else fut.exception(), len(acks))
                    return
                for handle in acks:
                    handle.ack()

            asyncio.gather(*written).add_done_callback(durable)

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
        t = self.table
        topic = t.changelog_topic.get_topic_name()
        producer = await self.app.maybe_start_producer()
        epoch = self._epoch.get(partition, 0)
        futures = []
        for key, value in items:
            fut = await producer.send(topic, key, value, partition, None, None)
            fut.add_done_callback(functools.partial(self._on_sent, partition, epoch, anchor, key, value))
            futures.append(fut)
        return futures

    def _on_sent(self, partition: int, epoch: int, anchor: Any, key: bytes, value: bytes, fut: asyncio.Future[Any]) -> None:
        """A changelog record the broker confirmed: into the local store, with its offset, as
        Faust's ``Collection._on_changelog_sent`` records it (a rocksdb store resumes from it)."""
        if fut.cancelled() or fut.exception() is not None:
            return  # the round's ``durable`` callback reports it
        if self._epoch.get(partition, 0) != epoch:
            return  # revoked since: recovery replays it from the broker when the partition comes back
        res = fut.result()
        data = self.table.data
        with _as_event(anchor):  # a rocksdb store puts the key in the current event's partition
            data[key] = value  # (Faust's table-set sensor is skipped: 4% of the worker's time in a profile, on no panel)
        if self.app.in_transaction:
            self.app.tables.persist_offset_on_commit(data, res.topic_partition, res.offset)
        else:
            data.set_persisted_offset(res.topic_partition, res.offset)

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked: confirmations of their earlier writes no longer touch the local store."""
        for p in partitions:
            self._epoch[p] = self._epoch.get(p, 0) + 1


def _batches(app: Any, stream: Any, most: int) -> Callable[[], Awaitable[list[Any]]]:
    """The agent's events in batches: every event waiting, up to ``most``, once at least one is.

    Iterating a Faust stream (``stream.take`` included) costs an event-loop pass
    and a chain of awaits per event; here that capped a passthrough agent near
    5,000 events/s. This reads the queue the conductor delivers the agent's
    events to, once per batch, with the checks and bookkeeping of Faust's
    stream iterator (faust/_cython/streams.pyx ``_prepare_event``): events
    fetched before a rebalance or while flow is stopped are dropped unacked
    (they are fetched again), and every event is tracked as unacked until the
    processor acks it. Faust's per-event stream sensors are not fed;
    riskmon's own metrics count the events.
    """
    queue = aiter(stream.channel).queue  # registers the agent's channel with the conductor, as iterating would
    flow = app.flow_control
    consumer = app.consumer
    acking = app.topics.acking_topics
    unacked = consumer.unacked

    async def batch() -> list[Any]:
        waiting = [await queue.get()]
        while len(waiting) < most and not queue.empty():
            waiting.append(queue.get_nowait())
        generation = app.consumer_generation_id
        events = []
        for event in waiting:
            message = event.message
            if not flow.is_active() or message.generation_id != generation:
                continue
            if message.topic in acking and not message.tracked:
                message.tracked = True
                unacked.add(message)
            events.append(event)
        return events

    return batch


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


def build_app(settings: Settings, bootstrap: str, on_decision: Callable[[dict[str, Any]], None] | None = None) -> tuple[faust.App, StreamProcessor]:
    if settings.broker_kind == "tansu":
        from . import tansu_fetch_wait, tansu_list_offsets

        tansu_list_offsets.install(bootstrap, **client_config(settings))
        tansu_fetch_wait.install()
    faust_drain.install()
    settings.datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
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
    # Table writes queue in Faust's producer buffer; at its default of 100 messages
    # every round stalls on it (and logs "producer buffer full").
    app.producer.buffer.max_messages = 20_000
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    names = settings.input_topics
    category_of = {t: c for c, t in names.items()}
    inputs = app.topic(*names.values(), partitions=settings.partitions, **raw)
    decisions = app.topic(settings.topic_decisions, partitions=settings.partitions, **raw)
    deadletter = app.topic(settings.topic_deadletter, partitions=settings.partitions, **raw)
    table = app.Table("accounts", default=None, partitions=settings.partitions, key_type=bytes, value_type=bytes)
    policy = load_policy(settings.policy_file) if settings.policy_file else None
    ports = FaustPorts(app, table, decisions, deadletter)
    # /metrics on the worker's web port: riskmon's metrics and Faust's sensors, one registry.
    registry = CollectorRegistry()
    setup_prometheus_sensors(app, registry=registry, name_prefix="riskmon_faust")
    metrics = Metrics(registry)
    proc = StreamProcessor(
        ports, policy=policy, checkpoint_every=settings.checkpoint_every,
        bad_dpd=settings.bad_dpd, max_record_bytes=settings.max_record_bytes, on_decision=on_decision,
        metrics=metrics, lateness_s=settings.lateness_s, late=settings.late_events, max_future_s=settings.max_future_s,
        snapshot_every_s=settings.snapshot_every_s,
    )
    lock = asyncio.Lock()
    owned: set[int] = set()  # input partitions this worker holds now

    def lag() -> list[tuple[str, int, int]]:
        out = []
        for p in sorted(owned):
            shard = proc.shards.get(p)
            for category, topic in names.items():
                tp = TP(topic, p)
                hw = app.consumer.highwater(tp)
                if hw is None or hw < 0:
                    continue
                done = shard.applied.get(category) if shard else None
                low = done.low if done is not None else (app.consumer._committed_offset.get(tp) or 0)
                out.append((topic, p, max(hw - low, 0)))
        return out

    metrics.watch(proc, lag, lambda: len(owned))

    async def write(rnd: Round) -> None:
        await ports.write(rnd)
        proc.saved(rnd)

    def caught_up(partition: int) -> Callable[[str], bool]:
        shard = proc.shards.get(partition)

        def check(category: str) -> bool:
            tp = TP(names[category], partition)
            hw = app.consumer.highwater(tp)
            if hw is None or hw < 0:
                return False
            seen = shard.last_offset.get(category, -1) + 1 if shard else 0
            # Faust seeks to the committed offset on assignment: records before it
            # were applied in an earlier life and will not be delivered again.
            committed = app.consumer._committed_offset.get(tp) or 0
            return max(seen, committed) >= hw

        return check

    @app.agent(inputs)
    async def monitor(stream: Any) -> None:
        batches = _batches(app, stream, settings.batch_size)
        while True:
            try:
                events = await batches()
            except StopAsyncIteration:  # the worker is stopping
                return
            async with lock:
                touched = set()
                for ev in events:
                    m = ev.message
                    if m.partition not in owned:
                        # Fetched before a rebalance took the partition away: the new
                        # owner gets it again (never acked here); applying it would
                        # write over the new owner's state.
                        proc.counts["not_owned"] += 1
                        continue
                    proc.ingest(category_of[m.topic], m.topic, m.partition, m.offset, m.key, m.value, ev)
                    touched.add(m.partition)
                for p in touched:
                    for rnd in proc.release(p, caught_up(p)):
                        await write(rnd)

    @app.timer(0.2)
    async def release_held() -> None:
        """Held events wait for a topic to catch up; nothing else may wake them."""
        async with lock:
            for p in list(proc.shards):
                for rnd in proc.release(p, caught_up(p)):
                    await write(rnd)

    def drop(partitions: set[int]) -> None:
        """Partitions this worker no longer owns: their shards go, and late confirmations of their writes
        no longer touch the local store (both, always: see FaustPorts._put_all)."""
        ports.forget(partitions)
        proc.revoke(partitions)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        async with lock:
            gone = {tp.partition for tp in revoked if tp.topic in category_of}
            owned.difference_update(gone)
            drop(gone)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        async with lock:
            mine = {tp.partition for tp in assigned if tp.topic in category_of}
            drop(set(proc.shards) - mine)
            owned.clear()
            owned.update(mine)

    return app, proc
