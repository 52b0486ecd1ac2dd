"""Tansu 0.6.0's ListOffsets(LATEST) fault, and the workaround in streams/tansu_list_offsets.py."""
from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from riskmon.streams.broker import EmbeddedBroker
from riskmon.streams.tansu_list_offsets import true_end_offsets

from .conftest import ROOT

pytestmark = pytest.mark.integration


def test_list_offsets_is_wrong_on_tansu_and_the_fetch_high_watermark_fixes_it(broker: EmbeddedBroker) -> None:
    async def go() -> tuple[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.url)
        await admin.start()
        await admin.create_topics([NewTopic("fault-list-offsets", 1, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=broker.url, linger_ms=20)
        await producer.start()
        await producer.send_and_wait("fault-list-offsets", b"first", partition=0)
        await asyncio.gather(*[await producer.send("fault-list-offsets", b"r%d" % i, partition=0) for i in range(100)])
        await producer.stop()
        tp = TopicPartition("fault-list-offsets", 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.url, enable_auto_commit=False)
        await consumer.start()
        reported = (await consumer.end_offsets([tp]))[tp]
        await consumer.stop()
        fixed = (await true_end_offsets(broker.url, {tp: reported}))[tp]
        return reported, fixed

    reported, fixed = asyncio.run(go())
    assert reported < 101, "the fault: the end offset of the newest batch's start, not the high watermark"
    assert fixed == 101


def _patched(kind: str) -> bool:
    code = (
        "from riskmon.streams.settings import Settings\n"
        "from riskmon.streams.app import build_app\n"
        "from faust.transport.drivers import aiokafka as d\n"
        "orig = d.AIOKafkaConsumerThread._highwaters\n"
        f"build_app(Settings(broker_url='127.0.0.1:1', broker_kind='{kind}'), '127.0.0.1:1')\n"
        "print(d.AIOKafkaConsumerThread._highwaters is not orig)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1] == "True"


def test_the_workaround_is_active_only_against_tansu() -> None:
    assert _patched("tansu") is True
    assert _patched("kafka") is False
