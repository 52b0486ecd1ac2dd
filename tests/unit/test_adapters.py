"""Adapter pieces that need no broker: partitioner, settings, CLI errors."""
from __future__ import annotations

import os
import random

import pytest
from aiokafka.partitioner import murmur2 as kafka_murmur2
from pydantic import ValidationError

from riskmon.models.partitioning import murmur2, partition_for
from riskmon.streams.cli import main
from riskmon.streams.settings import Settings


def test_replay_partitions_accounts_as_kafkas_default_partitioner() -> None:
    rng = random.Random(1)
    for _ in range(3000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        assert murmur2(data) == kafka_murmur2(data)
    assert partition_for("A0000001", 4) == (kafka_murmur2(b"A0000001") & 0x7FFFFFFF) % 4


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKMON_PARTITIONS", "8")
    monkeypatch.setenv("RISKMON_TOPIC_PREFIX", "bank1")
    s = Settings()
    assert s.partitions == 8 and s.topic_decisions == "bank1.decisions"
    assert s.input_topics["repayments"] == "bank1.repayments"
    assert s.web_host == "127.0.0.1", "web and metrics bind to loopback unless told otherwise"


@pytest.mark.parametrize("env,words", [
    ({"RISKMON_SECURITY_PROTOCOL": "SASL_SSL"}, "RISKMON_SASL_USERNAME"),
    ({"RISKMON_SECURITY_PROTOCOL": "SSL", "RISKMON_SSL_CAFILE": "/nonexistent/ca.pem"}, "not a readable file"),
    ({"RISKMON_STORE": "redis://x"}, "memory:// or rocksdb://"),
    ({"RISKMON_PARTITIONS": "0"}, "partitions"),
])
def test_bad_settings_say_what_is_wrong(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], words: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert words in str(info.value)


def test_secrets_are_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKMON_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("RISKMON_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("RISKMON_SASL_USERNAME", "riskmon")
    monkeypatch.setenv("RISKMON_SASL_PASSWORD", "hunter2-secret")
    s = Settings()
    assert "hunter2-secret" not in repr(s) and "hunter2-secret" not in str(s.model_dump())


@pytest.mark.parametrize("cmd", [["worker"], ["tail"], ["produce", "x.jsonl"]])
def test_commands_that_need_a_broker_say_so(cmd: list[str], monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("RISKMON_BROKER_URL", raising=False)
    assert main(cmd) == 2
    assert "RISKMON_BROKER_URL is not set" in capsys.readouterr().err


def test_a_child_process_reads_back_every_setting(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """start_worker_process hands settings over as RISKMON_* variables: all of them, not a chosen few."""
    given = Settings(broker_url="h1:9092,h2:9092", broker_kind="tansu", partitions=8, store="rocksdb://",
                     datadir=tmp_path, web_port=7001, session_timeout_s=6.0, batch_size=77,
                     security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
                     sasl_password="s3cret")  # type: ignore[arg-type]
    for k in list(os.environ):
        if k.startswith("RISKMON_"):
            monkeypatch.delenv(k)
    for k, v in given.to_env().items():
        monkeypatch.setenv(k, v)
    back = Settings()
    assert back.model_dump() == given.model_dump()
    assert back.sasl_password is not None and back.sasl_password.get_secret_value() == "s3cret"


def test_a_round_is_acked_only_once_the_broker_has_its_snapshot() -> None:
    """Faust commits acked offsets; acking before the snapshot's changelog write is confirmed would let a
    commit overtake the snapshot (Faust's pre-commit flush gives up after 0.1 s without a send).
    The writes go, snapshot first, to the round's partition of the table's changelog; the local store takes
    each record only once the broker confirms it, with its offset, as Faust's own changelog callback records
    it (a rocksdb store resumes from it), so it never holds a round the broker lacks."""
    import asyncio
    from types import SimpleNamespace

    from aiokafka.structs import RecordMetadata, TopicPartition

    from faust.streams import current_event

    from riskmon.streams.app import FaustPorts
    from riskmon.streams.checkpoint import Round

    class Anchor:  # a record of the round's partition
        pass

    anchor = Anchor()

    class Store(dict):  # type: ignore[type-arg]
        def __init__(self) -> None:
            super().__init__()
            self.persisted: list[tuple[TopicPartition, int]] = []

        def __setitem__(self, key: bytes, value: bytes) -> None:
            # Faust's rocksdb store puts a key in the partition of the current event.
            assert current_event() is anchor, "a table write outside the round's partition"
            super().__setitem__(key, value)

        def set_persisted_offset(self, tp: TopicPartition, offset: int) -> None:
            self.persisted.append((tp, offset))

    class Producer:  # the producer Faust would publish the changelog with; its futures stand for sends
        def __init__(self) -> None:
            self.sent: list[tuple[str, bytes, bytes, int, asyncio.Future[RecordMetadata]]] = []

        async def send(self, topic: str, key: bytes, value: bytes, partition: int, timestamp: None,
                       headers: None) -> asyncio.Future[RecordMetadata]:
            fut: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
            self.sent.append((topic, key, value, partition, fut))
            return fut

    def faust_app(producer: Producer) -> SimpleNamespace:
        async def maybe_start_producer() -> Producer:
            return producer
        return SimpleNamespace(maybe_start_producer=maybe_start_producer, in_transaction=False)

    def table() -> SimpleNamespace:
        return SimpleNamespace(data=Store(), changelog_topic=SimpleNamespace(get_topic_name=lambda: "app-accounts-changelog"))

    def confirm(sent: tuple[str, bytes, bytes, int, asyncio.Future[RecordMetadata]], offset: int) -> None:
        topic, _, _, partition, fut = sent
        fut.set_result(RecordMetadata(topic, partition, TopicPartition(topic, partition), offset, -1, 0, -1))

    class Handle:
        acked = False

        def ack(self) -> None:
            self.acked = True

    async def go() -> None:
        producer, t = Producer(), table()
        ports = FaustPorts(faust_app(producer), t, None, None, None)
        handles = [Handle(), Handle()]
        await ports.write(Round(3, anchor=anchor, snapshot=[(b"__shard__:3", b"s")], states=[(b"A1", b"{}")], acks=handles))
        assert [(topic, k, v, p) for topic, k, v, p, _ in producer.sent] == [
            ("app-accounts-changelog", b"__shard__:3", b"s", 3), ("app-accounts-changelog", b"A1", b"{}", 3)]
        await asyncio.sleep(0)
        assert t.data == {}, "the local store took a record the broker has not confirmed"
        assert not any(h.acked for h in handles), "acked before the broker confirmed the snapshot"
        confirm(producer.sent[0], 40)
        await asyncio.sleep(0)
        assert t.data == {b"__shard__:3": b"s"}
        confirm(producer.sent[1], 41)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert t.data == {b"__shard__:3": b"s", b"A1": b"{}"}
        assert all(h.acked for h in handles)
        tp = TopicPartition("app-accounts-changelog", 3)
        assert t.data.persisted == [(tp, 40), (tp, 41)]

        # A partition revoked while its writes are in flight: recovery replays them from the broker.
        await ports.write(Round(3, anchor=anchor, states=[(b"A2", b"{}")]))
        ports.forget({3})
        confirm(producer.sent[2], 42)
        await asyncio.sleep(0)
        assert b"A2" not in t.data and t.data.persisted == [(tp, 40), (tp, 41)]

        failing, lost_table = Producer(), table()
        lost = [Handle()]
        await FaustPorts(faust_app(failing), lost_table, None, None, None).write(Round(0, anchor=anchor, snapshot=[(b"k", b"v")], acks=lost))
        failing.sent[0][4].set_exception(RuntimeError("broker gone"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not lost[0].acked, "a snapshot that was not written must leave its records to be redone"
        assert lost_table.data.persisted == []

    asyncio.run(go())


def test_a_delivery_skips_faust_s_four_tasks_only_when_it_cannot_wait(tmp_path) -> None:
    """streams.faust_internals: the direct path is taken only when none of the conditions Faust's delivery waits on holds."""
    import asyncio

    import faust

    from riskmon.streams.faust_internals import _can_block

    app = faust.App("riskmon-drain-test", broker="kafka://127.0.0.1:1", datadir=str(tmp_path), stream_buffer_maxsize=3)
    topic = app.topic("t", key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    chan = aiter(topic)  # as an agent does: its channel is registered with the conductor
    asyncio.run(app.topics._update_indices())  # as subscribing does
    app.flow_control.resume()
    assert not _can_block(app, "t")
    app.flow_control.suspend()  # a rebalance: delivery waits for flow to resume
    assert _can_block(app, "t")
    app.flow_control.resume()
    app.producer.buffer.max_messages = -1  # the producer buffer over its limit: delivery flushes first
    assert _can_block(app, "t")
    app.producer.buffer.max_messages = 100
    for i in range(3):  # the agent's queue full: delivery waits for room
        chan.queue.put_nowait(i)
    assert _can_block(app, "t")
    assert not _can_block(app, "other-topic"), "a topic no agent reads has no queue to fill"


def test_the_agent_takes_what_waits_and_drops_records_fetched_before_a_rebalance(tmp_path) -> None:
    """streams.faust_internals.agent_batches: Faust's stream iterator checks, once per batch."""
    import asyncio
    from types import SimpleNamespace

    import faust

    from riskmon.streams.faust_internals import agent_batches

    app = faust.App("riskmon-batch-test", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    topic = app.topic("t", key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    class Message:  # the fields of a Faust message the check reads (Faust keeps unacked ones in a WeakSet)
        def __init__(self, offset: int, generation: int) -> None:
            self.topic, self.offset, self.generation_id, self.tracked = "t", offset, generation, False

    def event(offset: int, generation: int) -> SimpleNamespace:
        return SimpleNamespace(message=Message(offset, generation))

    async def go() -> None:
        app.flow_control.resume()
        app.consumer_generation_id = 2
        batch = agent_batches(app, SimpleNamespace(channel=topic), most=3)
        await app.topics._update_indices()  # as subscribing does
        assert "t" in app.topics.acking_topics
        queue = app.topics._topic_name_index["t"].copy().pop().queue
        waiting = [event(0, 1), event(1, 2), event(2, 2), event(3, 2), event(4, 2)]
        for e in waiting:
            queue.put_nowait(e)
        first = await batch()
        assert [e.message.offset for e in first] == [1, 2], "at most 3 taken; the one of generation 1 dropped"
        assert all(e.message.tracked for e in first) and not waiting[0].message.tracked
        assert {e.message for e in first} <= app.consumer.unacked, "tracked as unacked until the processor acks"
        assert [e.message.offset for e in await batch()] == [3, 4], "the rest, without waiting for a full batch"
        queue.put_nowait(event(5, 2))
        app.flow_control.suspend()  # a rebalance starts while the queue still holds a record
        assert await batch() == [], "flow stopped: dropped unacked, fetched again after the rebalance"

    asyncio.run(go())


def test_the_worker_logs_at_its_level_not_at_debug() -> None:
    """Faust's startup spinner sets the root logger to DEBUG, so every debug call of Faust and aiokafka built a
    record the handler dropped (6% of the worker's time); the worker runs without it."""
    import asyncio
    import logging

    import faust

    from riskmon.streams.worker import faust_worker

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    loop = asyncio.new_event_loop()
    try:
        app = faust.App("riskmon-logging-test", broker="kafka://127.0.0.1:1", web_enabled=False)
        faust_worker(app, loop, "warn")._setup_logging()  # what execute_from_commandline does first
        assert root.level == logging.WARNING
        assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("faust.topics").isEnabledFor(logging.DEBUG)
    finally:
        loop.close()
        root.setLevel(level)
        root.handlers[:] = handlers


def test_a_stall_is_input_waiting_with_nothing_applied_and_is_said_once() -> None:
    from riskmon.streams.stall import StallWatch

    w = StallWatch(limit_s=10)
    assert w.observe({0: (0, "a")}, now=0.0) == ([], [])
    assert w.observe({0: (0, "a")}, now=100.0) == ([], []), "idle with nothing waiting is no stall"
    assert w.observe({0: (4, "a")}, now=101.0) == ([], []), "the clock starts when input begins to wait"
    assert w.observe({0: (4, "a")}, now=111.0) == ([(0, 4, 10.0)], [])
    assert w.observe({0: (6, "a")}, now=130.0) == ([], []) and w.stalled() == {0}, "said once per stall"
    assert w.observe({1: (3, "z")}, now=131.0) == ([], []) and w.stalled_seconds() == {1: 0.0}, "a partition gone is forgotten"
    assert w.observe({1: (3, "z")}, now=141.0) == ([(1, 3, 10.0)], [])
    assert w.observe({1: (0, "z")}, now=142.0) == ([], []) and w.stalled() == set(), "nothing waiting any more"
    with pytest.raises(ValueError):
        StallWatch(0)
