"""A client this project did not write, on the embedded broker: confluent-kafka (librdkafka) in and out.

Most non-Java clients (Go, .NET, Python's confluent-kafka, kcat) are librdkafka. One of them
publishes the events and a policy update, following the producer contract in the README
(murmur2 partitioner, one control record), and another subscribes to the decisions in a
consumer group: the decisions are replay's.
"""
from __future__ import annotations

import pathlib
import time
from typing import Any

import orjson
import pytest

from riskmon.models.codec import dumps
from riskmon.models.events import CATEGORY
from riskmon.models.simulate import simulate

from .conftest import Cluster, diff, replay_decisions, write_log

confluent_kafka = pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.integration


def test_a_librdkafka_producer_and_consumer_group_work_against_the_embedded_broker(
        broker: Any, tmp_path: pathlib.Path) -> None:
    cluster = Cluster(broker, tmp_path)
    try:
        events, _ = simulate(150, 45, 29)
        at = events[len(events) // 2]["ts"]
        events.append({"type": "policy_update", "event_id": "rdkafka-policy-1", "ts": at, "policy_version": "rdk-1",
                       "thresholds": {"score.watch": 0.2, "score.watch_exit": 0.1}})
        expected = replay_decisions(write_log(tmp_path / "ev.jsonl", events))
        s = cluster.settings

        producer = confluent_kafka.Producer({"bootstrap.servers": cluster.bootstrap, "partitioner": "murmur2_random",
                                             "linger.ms": 5})
        failed: list[Any] = []
        for e in events:
            key = None if e["type"] == "policy_update" else e["account_id"].encode()
            producer.produce(s.input_topics[CATEGORY[e["type"]]], dumps(e), key=key,
                             on_delivery=lambda err, _msg: failed.append(err) if err else None)
            producer.poll(0)
        assert producer.flush(30) == 0 and not failed, failed

        cluster.start_worker()
        # Group joins on Tansu take about half the session timeout: a short one, as for Faust.
        consumer = confluent_kafka.Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"rdk-{s.app_id}",
                                             "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                                             "enable.auto.commit": False})
        consumer.subscribe([s.topic_decisions])
        seen: dict[str, bytes] = {}
        deadline = time.monotonic() + 180
        try:
            while len(seen) < len(expected) and time.monotonic() < deadline:
                for msg in consumer.consume(500, timeout=1.0):
                    assert msg.error() is None, msg.error()
                    seen.setdefault(orjson.loads(msg.value())["decision_id"], msg.value())
                assert all(p.poll() is None for p in cluster.workers), cluster.logs()
            consumer.commit(asynchronous=False)  # the group's position: past every decision read
            committed = consumer.committed(consumer.assignment(), timeout=10)
            assert sum(max(tp.offset, 0) for tp in committed) >= len(seen)
        finally:
            consumer.close()
        got = list(seen.values())
        assert sorted(got) == sorted(expected), diff(got, expected)
        assert {orjson.loads(d)["policy_version"] for d in got if orjson.loads(d)["event_ts"] >= at} == {"rdk-1"}
    finally:
        cluster.stop()
