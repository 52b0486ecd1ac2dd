"""Tansu 0.6.0 holds fetches open; streams/tansu_fetch_wait.py shortens Faust's fetch wait against it."""
from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from riskmon.streams.broker import EmbeddedBroker

from .conftest import ROOT

pytestmark = pytest.mark.integration


async def _median_latency_ms(url: str, topic: str, wait_ms: int) -> float:
    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=url, linger_ms=0)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=url, auto_offset_reset="earliest", fetch_max_wait_ms=wait_ms)
    await producer.start()
    await consumer.start()
    sent: dict[bytes, float] = {}
    lat: list[float] = []

    async def read() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=20)
            now = time.perf_counter()
            lat.extend(now - sent[r.value] for recs in batch.values() for r in recs)

    reader = asyncio.create_task(read())
    await asyncio.sleep(1.5)
    for i in range(60):
        key = b"%d" % i
        sent[key] = time.perf_counter()
        await producer.send_and_wait(topic, key)
        await asyncio.sleep(0.03)
    await asyncio.sleep(2.5)
    reader.cancel()
    await producer.stop()
    await consumer.stop()
    assert len(lat) == 60
    return 1000 * statistics.median(lat)


def test_fetches_wait_on_tansu_and_a_short_wait_fixes_it(broker: EmbeddedBroker) -> None:
    slow = asyncio.run(_median_latency_ms(broker.url, "fault-fetch-wait-slow", 1500))
    fast = asyncio.run(_median_latency_ms(broker.url, "fault-fetch-wait-fast", 20))
    assert slow > 5 * fast, (slow, fast)  # the fault: a consumer with Faust's wait hears late


def test_the_fetch_wait_workaround_is_active_only_against_tansu() -> None:
    code = (
        "from riskmon.streams.settings import Settings\n"
        "from riskmon.streams.app import build_app\n"
        "from faust.transport.drivers import aiokafka as d\n"
        "orig = d.AIOKafkaConsumerThread._create_consumer\n"
        "import sys\n"
        "build_app(Settings(broker_url='127.0.0.1:1', broker_kind=sys.argv[1]), '127.0.0.1:1')\n"
        "print(d.AIOKafkaConsumerThread._create_consumer is not orig)\n"
    )
    for kind, want in (("tansu", "True"), ("kafka", "False")):
        out = subprocess.run([sys.executable, "-c", code, kind], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == want, kind
