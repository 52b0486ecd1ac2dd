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

from .conftest import Cluster

pytestmark = pytest.mark.integration


def _crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's default partitioner for a keyed record (consistent_random: CRC32 of the key)."""
    return zlib.crc32(key) % partitions


def test_records_a_crc32_producer_misroutes_apply_in_the_partition_that_owns_their_account(
        cluster: Cluster, tmp_path: pathlib.Path) -> None:
    events, _ = simulate(120, 45, 5)
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
