"""Every use of faust-streaming's internals, in one module, written against one version of it.

riskmon keeps Faust for what it does well (the app, tables and their
changelogs, rebalancing, the web server) and goes around it on the hot path.
Each function here names the Faust code it reads or replaces; everything else
in riskmon uses Faust's public API only (tests/unit/test_structure.py scans for
it). On any other Faust version this module refuses to load, with one line
saying why, rather than let a worker run on internals that may have moved.

What is used, and why:

1. :func:`agent_batches`: the agent reads the queue the conductor delivers its
   records to, a batch at a time, instead of iterating the stream (an
   event-loop pass and a chain of awaits per record).
2. :func:`install_direct_delivery`: the consumer hands a record to the agent
   without four tasks when the hand-off cannot block; :func:`before_revocation_waits`:
   the records the agent holds are let go before a rebalance waits for them;
   :func:`refetch_dropped_records`: records the consumer fetched and did not
   deliver are fetched again, also in partitions with no committed offset.
3. :func:`as_current_event`, :func:`store_confirmed`, :func:`changelog_producer`:
   table writes go straight to the producer, and into the local store only
   once the broker has confirmed them (see ``streams.app.FaustPorts``).
4. :func:`committed_offset`, :func:`set_producer_buffer`, :func:`quiet_worker`,
   :func:`bound_stop`: small reads and settings with no public API.
5. :func:`wrap_consumer_creation`, :func:`wrap_highwaters`: the hooks the
   workarounds for Tansu's faults use (``streams.tansu_*``).
"""
from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Mapping, cast

import faust
from faust.streams import _current_event

__all__ = [
    "FAUST_VERSION", "agent_batches", "as_current_event", "before_revocation_waits", "changelog_producer", "check_version", "committed_offset",
    "bound_stop", "install_direct_delivery", "quiet_worker", "refetch_dropped_records", "set_producer_buffer", "shorten_fetch_wait", "store_confirmed",
    "wrap_consumer_creation", "wrap_highwaters",
]

FAUST_VERSION = "0.15.3"


def check_version(version: str = faust.__version__) -> None:
    """Raise a one-line RuntimeError unless faust-streaming is the version this module was written against."""
    if version != FAUST_VERSION:
        raise RuntimeError(
            f"riskmon's worker uses internals of faust-streaming {FAUST_VERSION} (streams/faust_internals.py), "
            f"but {version} is installed: install faust-streaming=={FAUST_VERSION}, or port that module")


check_version()


# -- 1. the agent's input in batches ---------------------------------------
def agent_batches(app: faust.App, stream: Any, most: int) -> Callable[[], Awaitable[list[Any]]]:
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


# -- 2. the consumer's hand-off without four tasks per record ---------------
_direct_delivery = False


def _can_block(app: Any, topic: str) -> bool:
    """Whether delivering a record of ``topic`` could wait (see faust.transport.conductor ``on_message``)."""
    if not app.flow_control.is_active():  # acquire_flow_control() waits for resume
        return True
    buffer = app.producer.buffer
    if buffer.size > buffer.max_messages:  # wait_until_ebb() flushes
        return True
    conductor = app.topics
    if conductor._tp_to_callback_lock.locked():
        return True
    for chan in conductor._topic_name_index.get(topic, ()):
        if chan.queue.full():  # delivered with an awaited put
            return True
    return False


def install_direct_delivery() -> None:
    """Replace ``Consumer._drain_messages`` with one that awaits a delivery directly when it cannot block.

    The cost: faust-streaming 0.15.3's ``Consumer._drain_messages`` delivers each
    fetched record with ``wait_first(callback(message), suspend_flow.wait())``,
    which wraps the delivery, the flow-suspension wait and the service's stopped
    and crashed waits in four tasks, waits for the first, and cancels the rest.
    That is the point of it: a delivery that blocks (flow suspended for a
    rebalance, producer buffer over its limit, a stream's buffer full) can be
    interrupted. But a delivery that cannot block pays for it too, on every record.

    The change: before each record, check the exact conditions under which Faust's
    delivery (``Conductor`` ``on_message``) would wait (:func:`_can_block`). If none
    holds, the delivery runs to completion without suspending, so it is awaited
    directly; otherwise Faust's own ``wait_first`` runs as before. Everything else
    is Faust's code, line for line. Nothing changes in what is delivered, in what
    order, or when a rebalance can interrupt a delivery that waits.
    """
    global _direct_delivery
    if _direct_delivery:
        return
    from faust.transport.consumer import CONSUMER_FETCHING, Consumer
    from mode import Service

    async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - runs in every worker
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        app = self.app
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                if acks_enabled_for(message.topic):
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:
                                if self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                            if self.suspend_flow.is_set() or _can_block(app, message.topic):
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            else:
                                await callback(message)  # cannot suspend: see the docstring
                            set_read_offset(tp, offset)
                        # Not Faust's: drop the reference while the loop waits for the next record (up to
                        # the fetch timeout, again and again while a rebalance pauses fetching). A record
                        # the agent holds unacked and then lets go of would otherwise stay in Faust's weak
                        # set of unacked records, and the rebalance would wait for it forever.
                        message = None
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)

    Consumer._drain_messages = _drain_messages
    _direct_delivery = True


def refetch_dropped_records() -> None:
    """Replace ``Consumer.getmany`` with one that seeks back to the records it fetched and did not deliver.

    The loss: faust-streaming 0.15.3's ``Consumer.getmany`` drops fetched records it will not
    deliver (of a partition paused while the tables recover, every one after the flow stopped or
    the generation changed, or all of them when the flow was already stopped), and leaves it to
    ``perform_seek`` (seek to the committed offsets) to fetch them again. aiokafka's
    ``seek_to_committed`` seeks a partition only when its committed offset is above 0, so in a
    partition with none committed the dropped records were never delivered: aiokafka fetches a
    newly assigned partition from its start while Faust has it paused for table recovery (seen:
    ``chaos.lifecycle[0]`` 0-388, ``chaos.transactions[1]`` 6613-7974 dropped so). Under repeated
    kill -9s partitions often have no commit yet (records are acked only once their snapshot is
    confirmed), so the next owner started "afresh" thousands of offsets in, or resumed a snapshot
    with a gap, and those records' decisions were lost.

    The change: Faust's code, except that once a record of an input partition (a topic with acks
    enabled: not a changelog, whose positions table recovery keeps) is not delivered, its later
    ones are not either, and the partition is sought back to it, only if nothing has moved the
    partition since this fetch (its position is still just past the batch: a rebalance, recovery
    or ``perform_seek`` that sought it since wins). Where Faust then calls ``perform_seek``, a
    committed offset still wins.
    """
    from collections import Counter

    from faust.transport.consumer import Consumer

    async def _seek_back(thread: Any, offsets: dict[Any, tuple[int, int]]) -> None:
        consumer = thread._ensure_consumer()
        assignment = consumer._subscription.subscription.assignment if consumer._subscription.subscription else None
        if assignment is None:
            return
        for tp, (offset, fetched_to) in offsets.items():
            if tp in assignment.tps:
                state = assignment.state_value(tp)
                if state.has_valid_position and state.position == fetched_to:
                    consumer.seek(tp, offset)

    async def refetch(self: Any, records: Mapping[Any, Any], delivered: Counter[Any], generation_id: int) -> None:
        if self.app.consumer_generation_id != generation_id:
            return  # a new assignment positions every partition anew
        acks_enabled_for = self.app.topics.acks_enabled_for
        offsets = {tp: (recs[delivered[tp]].offset, recs[-1].offset + 1) for tp, recs in records.items()
                   if delivered[tp] < len(recs) and acks_enabled_for(tp.topic)}
        if offsets:
            self.log.info("Fetched records not delivered; fetching them again from %r",
                          {tp: offset for tp, (offset, _) in offsets.items()})
            await self._thread.call_thread(_seek_back, self._thread, offsets)

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:  # pragma: no cover - every worker
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        delivered: Counter[Any] = Counter()  # records yielded, per partition (Faust's own code ends here)
        held_back: set[Any] = set()  # partitions with a record not delivered: their later ones are not either
        records_it = self.scheduler.iterate(records)
        to_message = self._to_message
        if self.flow_active:
            for tp, record in records_it:
                if not self.flow_active:
                    break
                new_generation_id = self.app.consumer_generation_id
                if new_generation_id != generation_id:
                    self.log.dev("Generation id changed from %r to %r. Cancelling getmany.", generation_id,
                                 new_generation_id)
                    break
                if tp not in held_back and (
                        active_partitions is None or tp in active_partitions or tp in self._buffered_partitions):
                    highwater_mark = self.highwater(tp)
                    self.app.monitor.track_tp_end_offset(tp, highwater_mark)
                    delivered[tp] += 1
                    yield tp, to_message(tp, record)
                else:
                    held_back.add(tp)
            await refetch(self, records, delivered, generation_id)
        else:
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await refetch(self, records, delivered, generation_id)
                await self.perform_seek()
            except Exception as ex:
                self.log.warning(f"exception performing seek when flow not active {ex}")

    Consumer.getmany = getmany


def before_revocation_waits(app: faust.App, hook: Callable[[set[Any]], Awaitable[None]]) -> None:
    """Call ``hook(assigned partitions)`` when a rebalance revokes them, before Faust waits for their records.

    faust-streaming 0.15.3's ``App._on_partitions_revoked`` suspends flow, then
    waits (``_consumer_wait_empty`` -> ``Consumer.wait_empty``) until every record
    handed to an agent is acked, and only then sends the ``on_partitions_revoked``
    signal. riskmon's event-time hold keeps records it was handed, unacked, until
    no topic of their partition can precede them; with fetching paused for the
    rebalance, none ever catches up, so the wait never ended (the group sat in
    ``wait_empty`` while the broker rebalanced it every second). The hook lets the
    worker let go of them first: they were never acked, so the partition's next
    owner reads them again. ``Consumer._unacked_messages`` is a weak set, and
    ``wait_empty`` collects garbage before each look, so records no longer held
    anywhere stop counting.
    """
    original = app._consumer_wait_empty

    async def _consumer_wait_empty(consumer: Any, logger: Any) -> None:
        await hook(set(consumer.assignment()))
        await original(consumer, logger)

    app._consumer_wait_empty = _consumer_wait_empty  # type: ignore[method-assign]


# -- 3. table writes ---------------------------------------------------------
@contextlib.contextmanager
def as_current_event(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event, so a table write lands in its partition.

    A rocksdb store puts a key in the partition of the "current" event. Records of
    one round all come from one partition, but the round may run in a timer or
    after a batch that mixed partitions.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def changelog_producer(app: faust.App, table: Any) -> tuple[Any, str]:
    """(the producer Faust's own table writes use: its transaction manager under exactly_once; the changelog topic)."""
    producer = await app.maybe_start_producer()
    return producer, table.changelog_topic.get_topic_name()


def store_confirmed(app: faust.App, table: Any, anchor: Any, key: bytes, value: bytes, sent: Any) -> None:
    """A changelog record the broker confirmed (``sent``: its RecordMetadata): into the local store, with
    its offset, as Faust's ``Collection._on_changelog_sent`` records it (a rocksdb store resumes from it).

    Faust's table-set sensor is skipped: 4% of the worker's time in a profile, on no panel.
    """
    data = table.data
    with as_current_event(anchor):
        data[key] = value
    if app.in_transaction:
        app.tables.persist_offset_on_commit(data, sent.topic_partition, sent.offset)
    else:
        data.set_persisted_offset(sent.topic_partition, sent.offset)


async def seek_back(app: faust.App, tp: Any, offset: int) -> None:
    """Fetch ``tp`` again from ``offset``, in the consumer's own thread.

    Not ``Consumer.seek``: faust-streaming 0.15.3's calls aiokafka's ``seek`` from the caller's
    thread while the consumer runs in its own; under a stream of records that raced with the
    fetcher (``KeyError`` on its record buffer, the worker crashed) and the position kept moving
    on. ``seek_wait`` runs it in the consumer's thread and sets Faust's read offset, so the
    records from ``offset`` are delivered again rather than skipped as already read.
    """
    await app.consumer.seek_wait({tp: offset})


def fetch_state(app: faust.App, tp: Any) -> str:
    """Why Faust's consumer is not fetching ``tp`` now ("" if it is): paused (for a rebalance or table
    recovery), its stream's buffer full (the conductor's pressure), or not among the active partitions."""
    c = app.consumer
    why = [w for w, s in (("paused", c._paused_partitions), ("buffer full", c._buffered_partitions)) if tp in s]
    active = c._active_partitions
    if not why and active is not None and tp not in active:
        why.append("not active")
    return ", ".join(why)


def resume_fetching(app: faust.App, tp: Any) -> str:
    """Let Faust's consumer fetch ``tp`` again if it stopped and nothing is under way that should hold it
    (a rebalance, table recovery); what was undone ("" if nothing).

    A partition taken out of fetching when its stream's buffer filled is put back only by a callback
    the buffer's queue runs as it drains; a pause is lifted by the end of table recovery. If either is
    lost, nothing fetches the partition again. A buffer that is still full takes it out again."""
    if app.in_recovery or not app.flow_control.is_active():
        return ""
    c = app.consumer
    undone = []
    if tp in c._buffered_partitions:
        c.on_buffer_drop(tp)
        undone.append("buffer full")
    if tp in c._paused_partitions:
        c.resume_partitions([tp])
        undone.append("paused")
    return ", ".join(undone)


# -- 4. small reads and settings ----------------------------------------------
def committed_offset(app: faust.App, tp: Any) -> int:
    """The offset the group last committed for ``tp`` as this consumer knows it (0 if none)."""
    return cast(int, app.consumer._committed_offset.get(tp) or 0)


def set_producer_buffer(app: faust.App, max_messages: int) -> None:
    """Faust queues table writes it makes itself in its producer buffer, 100 messages by default."""
    app.producer.buffer.max_messages = max_messages


def quiet_worker(worker: faust.Worker) -> faust.Worker:
    """Run ``worker`` without its startup spinner.

    The spinner spins on every log record, so it sets the root logger to DEBUG
    (faust/worker.py, ``_setup_spinner_handler``): every debug call of Faust and
    aiokafka, several per record sent, then built a LogRecord that the handler
    dropped (6% of the worker's time in a py-spy profile).
    """
    worker.spinner = None
    return worker


def bound_stop(worker: faust.Worker, deadline_s: float, on_overrun: Callable[[], None]) -> faust.Worker:
    """Call ``on_overrun()`` (in a thread) if ``worker`` has not stopped ``deadline_s`` after its first SIGTERM or
    SIGINT.

    mode's ``Worker._schedule_shutdown`` (mode/worker.py), which both signal handlers call, starts the
    stop on the first signal and ignores the rest; the stop itself has no time limit (Faust waits for
    agents, flushes the producer and leaves the group, each bounded only by request timeouts of up to
    20 minutes with the broker gone).
    """
    import threading

    schedule = worker._schedule_shutdown

    def _schedule_shutdown(signal: Any) -> None:
        if not worker._signal_stop_time:
            timer = threading.Timer(deadline_s, on_overrun)
            timer.daemon = True
            timer.start()
        schedule(signal)

    worker._schedule_shutdown = _schedule_shutdown  # type: ignore[method-assign]
    return worker


# -- 5. hooks for the Tansu workarounds --------------------------------------------
def wrap_consumer_creation(hook: Callable[[Any], None]) -> None:
    """Call ``hook(consumer)`` on every aiokafka consumer Faust's driver creates, before it starts."""
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._create_consumer

    def _create_consumer(self: Any, *args: Any, **kwargs: Any) -> Any:
        consumer = original(self, *args, **kwargs)
        hook(consumer)
        return consumer

    driver.AIOKafkaConsumerThread._create_consumer = _create_consumer


def shorten_fetch_wait(wait_ms: int) -> None:
    """Make every consumer Faust creates wait at most ``wait_ms`` for a fetch (aiokafka reads the
    private ``_fetch_max_wait_ms`` when it starts its fetcher; Faust sets 1,500 ms and offers no setting)."""

    def hook(consumer: Any) -> None:
        consumer._fetch_max_wait_ms = wait_ms

    wrap_consumer_creation(hook)


def wrap_highwaters(correct: Callable[[Mapping[Any, int]], Awaitable[Mapping[Any, int]]]) -> None:
    """Pass the end offsets Faust's driver reads for changelog recovery through ``correct``
    (not inside a transaction, where they come from the transaction's own view)."""
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._highwaters

    async def _highwaters(self: Any, partitions: Any) -> Mapping[Any, int]:
        reported = await original(self, partitions)
        if self.consumer.in_transaction:
            return reported
        return await correct(reported)

    driver.AIOKafkaConsumerThread._highwaters = _highwaters
