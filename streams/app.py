"""The Faust app: topics, the state table, one agent over the four input topics.

The agent stays thin: records go to :class:`streams.processor.StreamProcessor`,
which calls back here to read and write the table, send decisions and dead
letters, and ack.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any, Awaitable, Callable, Iterator

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.streams import _current_event  # the table writes to the changelog partition of the "current" event
from faust.types import TP

from models.policy import load_policy

from prometheus_client import CollectorRegistry

from . import faust_drain
from .metrics import Metrics
from .processor import Round, StreamProcessor
from .settings import Settings
from .topics import client_config

__all__ = ["build_app"]

log = logging.getLogger("riskmon.app")


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
    def __init__(self, table: Any, decisions: Any, deadletter: Any) -> None:
        self.table, self.decisions, self.deadletter = table, decisions, deadletter

    def get(self, key: bytes) -> bytes | None:
        return self.table.get(key)  # type: ignore[no-any-return]

    async def write(self, rnd: Round) -> None:
        """Make a round durable in the order the processor's recovery relies on; the caller then calls ``proc.saved``."""
        sent = [await self.decisions.send(key=aid.encode(), value=value) for aid, value in rnd.decisions]
        sent += [await self.deadletter.send(key=key, value=value, headers=headers) for key, value, headers in rnd.dead]
        if sent:
            await asyncio.gather(*sent)  # delivered before the snapshot can say "applied"
        with _as_event(rnd.anchor):
            # The snapshot first: it carries the round's states too.
            written = [self._put(key, value) for key, value in rnd.snapshot + rnd.states]
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

    def _put(self, key: bytes, value: bytes) -> Any:
        """``table[key] = value``, returning the changelog send's future (resolved when the broker has it)."""
        t = self.table
        fut = t.send_changelog(t.partition_for_key(key), key, value)
        t.data[key] = value  # (Faust's table-set sensor is skipped: 4% of the worker's time in a profile, on no panel)
        return fut


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
    ports = FaustPorts(table, decisions, deadletter)
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

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        async with lock:
            gone = {tp.partition for tp in revoked if tp.topic in category_of}
            owned.difference_update(gone)
            proc.revoke(gone)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        async with lock:
            mine = {tp.partition for tp in assigned if tp.topic in category_of}
            proc.revoke(set(proc.shards) - mine)
            owned.clear()
            owned.update(mine)

    return app, proc
