"""Adapter pieces that need no broker: partitioner, settings, CLI errors."""
from __future__ import annotations

import os
import random

import pytest
from aiokafka.partitioner import murmur2 as kafka_murmur2
from pydantic import ValidationError

from models.partitioning import murmur2, partition_for
from streams.cli import main
from streams.settings import Settings


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
    commit overtake the snapshot (Faust's pre-commit flush gives up after 0.1 s without a send)."""
    import asyncio
    from types import SimpleNamespace

    from streams.app import FaustPorts
    from streams.processor import Round

    class Table:  # the parts of a Faust table FaustPorts uses; the futures stand for changelog sends
        def __init__(self) -> None:
            self.data: dict[bytes, bytes] = {}
            self.sent: list[asyncio.Future[None]] = []

        def partition_for_key(self, key: bytes) -> int:
            return 0

        def send_changelog(self, partition: int, key: bytes, value: bytes) -> asyncio.Future[None]:
            self.sent.append(asyncio.get_running_loop().create_future())
            return self.sent[-1]

    class Anchor:  # the event whose partition the table writes go to
        pass

    class Handle:
        acked = False

        def ack(self) -> None:
            self.acked = True

    async def go() -> None:
        table = Table()
        ports = FaustPorts(table, None, None)
        handles = [Handle(), Handle()]
        await ports.write(Round(0, anchor=Anchor(), snapshot=[(b"__shard__:0", b"s")],
                                states=[(b"A1", b"{}")], acks=handles))
        assert table.data == {b"__shard__:0": b"s", b"A1": b"{}"}
        await asyncio.sleep(0)
        assert not any(h.acked for h in handles), "acked before the broker confirmed the snapshot"
        for f in table.sent:
            f.set_result(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert all(h.acked for h in handles)
        failed = Table()
        lost = [Handle()]
        await FaustPorts(failed, None, None).write(Round(0, anchor=Anchor(), snapshot=[(b"k", b"v")], acks=lost))
        failed.sent[0].set_exception(RuntimeError("broker gone"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not lost[0].acked, "a snapshot that was not written must leave its records to be redone"

    asyncio.run(go())


def test_a_delivery_skips_faust_s_four_tasks_only_when_it_cannot_wait(tmp_path) -> None:
    """streams.faust_drain: the direct path is taken only when none of the conditions Faust's delivery waits on holds."""
    import asyncio

    import faust

    from streams.faust_drain import _can_block

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
    """streams.app._batches: Faust's stream iterator checks, once per batch."""
    import asyncio
    from types import SimpleNamespace

    import faust

    from streams.app import _batches

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
        batch = _batches(app, SimpleNamespace(channel=topic), most=3)
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

    from streams.worker import faust_worker

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
