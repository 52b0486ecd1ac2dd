"""Producers that are not ours: records on a partition that does not own their account go where it does."""
from __future__ import annotations

import asyncio
import pathlib
import time
import urllib.request
import zlib
from collections import defaultdict
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from riskmon.models.codec import dumps
from riskmon.models.events import CATEGORY
from riskmon.models.partitioning import partition_for
from riskmon.models.simulate import simulate

from .conftest import Cluster, diff, replay_decisions

pytestmark = pytest.mark.integration


def _crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's default partitioner for a keyed record (consistent_random: CRC32 of the key)."""
    return zlib.crc32(key) % partitions


def test_records_a_crc32_producer_misroutes_apply_in_the_partition_that_owns_their_account(
        cluster: Cluster, tmp_path: pathlib.Path) -> None:
    events, _ = simulate(120, 45, 5)
    # A model per partition: its version (p<partition>.v<n>) says which partition judged each decision.
    cluster.settings = cluster.settings.model_copy(update={"model_scope": "partition"})
    s, n = cluster.settings, cluster.settings.partitions
    # A second upstream system with a librdkafka client publishes the repayments: its partitioner
    # puts many accounts on other partitions than the murmur2 one the rest of their events use.
    misrouted = 0

    async def publish() -> None:
        nonlocal misrouted
        p = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap)
        await p.start()
        try:
            for e in events:
                category, key = CATEGORY[e["type"]], e["account_id"].encode()
                right = partition_for(e["account_id"], n)
                part = _crc32_partition(key, n) if category == "repayments" else right
                misrouted += part != right
                await p.send(s.input_topics[category], dumps(e), key=key, partition=part)
            await p.flush()
        finally:
            await p.stop()

    asyncio.run(publish())
    assert misrouted > 100
    cluster.start_worker()
    moved = cluster.read(s.topic_repartition, lambda rs: len(rs) >= misrouted, 120)
    assert len(moved) == misrouted
    for r in moved:  # each sent on to the partition that owns its account, saying where it came from
        e = orjson.loads(r.value)
        headers = dict(r.headers)
        assert r.partition == partition_for(e["account_id"], n)
        assert headers["riskmon-topic"] == s.input_topics["repayments"].encode()
        assert int(headers["riskmon-partition"]) == _crc32_partition(e["account_id"].encode(), n) != r.partition

    # Every account is judged in one partition, by its model: never split over two.
    by_account: dict[str, set[str]] = defaultdict(set)
    for d in cluster.read(s.topic_decisions, lambda rs: False, 20):
        d = orjson.loads(d.value)
        by_account[d["account_id"]].add(d["model_version"].split(".")[0])
    assert by_account and all(parts == {f"p{partition_for(a, n)}"} for a, parts in by_account.items()), by_account

    # Counted, and no record of theirs dead-lettered.
    deadline, rerouted = time.monotonic() + 30, 0.0
    while rerouted < misrouted and time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{cluster.web_ports[0]}/metrics", timeout=5).read().decode()
        rerouted = sum(x.value for f in text_string_to_metric_families(text) for x in f.samples
                       if x.name == "riskmon_records_rerouted_total")
        time.sleep(0.5)
    assert rerouted == misrouted
    assert cluster.read(s.topic_deadletter, lambda rs: False, 3) == []


def test_one_control_record_from_another_producer_governs_every_partition_on_two_workers(
        broker: Any, tmp_path: pathlib.Path) -> None:
    """An upstream tool publishes a policy update and a breaker command once, with no partition named:
    both workers apply them in every partition they hold, in event-time order, exactly as replay does."""
    cluster = Cluster(broker, tmp_path, model_scope="partition")  # the model version names the partition
    try:
        events, _ = simulate(240, 60, 23)
        at = events[len(events) // 2]["ts"]
        control = [
            {"type": "policy_update", "event_id": "ops-tight-1", "ts": at, "policy_version": "ops-tight-1",
             "thresholds": {"score.watch": 0.15, "score.watch_exit": 0.08, "dpd.limit": 15}},
            {"type": "breaker_command", "event_id": "ops-rearm-1", "ts": at, "command": "drop", "action": "closure",
             "note": "ops: re-arm"},
        ]
        log = tmp_path / "ev.jsonl"
        log.write_bytes(b"".join(dumps(e) + b"\n" for e in [*events, *control]))
        expected = replay_decisions(log, portfolio=False)
        s = cluster.settings

        async def publish() -> None:
            p = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap)
            await p.start()
            try:
                for e in events:
                    await p.send(s.input_topics[CATEGORY[e["type"]]], dumps(e), key=e["account_id"].encode(),
                                 partition=partition_for(e["account_id"], s.partitions))
                for e in control:  # one record each, wherever the client puts it
                    await p.send(s.input_topics["control"], dumps(e))
                await p.flush()
            finally:
                await p.stop()

        asyncio.run(publish())
        cluster.start_worker(slot=0)
        cluster.start_worker(slot=1)
        got, _ = cluster.decisions(len(expected))
        assert sorted(got) == sorted(expected), diff(got, expected)
        versions = {orjson.loads(d)["policy_version"] for d in got if orjson.loads(d)["event_ts"] >= at}
        assert versions == {"ops-tight-1"}
        # Every partition took the update: decisions after it, carrying it, come from all four.
        models = {orjson.loads(d)["model_version"].split(".")[0] for d in got if orjson.loads(d)["event_ts"] >= at}
        assert models == {f"p{i}" for i in range(s.partitions)}
    finally:
        cluster.stop()


def test_a_control_topic_of_several_partitions_is_refused_in_one_line(broker: Any, tmp_path: pathlib.Path) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from riskmon.streams.settings import Settings
    from riskmon.streams.topics import create_topics

    settings = Settings(broker_url=broker.url, partitions=4, topic_prefix=f"multi-control-{time.monotonic_ns()}")

    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.url)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(settings.input_topics["control"], 4, 1)])
        finally:
            await admin.close()
        await create_topics(settings, broker.url)

    with pytest.raises(ValueError, match=r"control topic must have 1"):
        asyncio.run(go())
