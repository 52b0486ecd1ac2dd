"""Publish an event log to the input topics, keyed by account, in the order replay applies it."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from collections import Counter
from pathlib import Path
from typing import IO, Callable

from aiokafka import AIOKafkaProducer

from riskmon.models.codec import decode
from riskmon.models.errors import Rejected
from riskmon.models.events import CATEGORY, event_order
from riskmon.models.partitioning import partition_for

from .settings import Settings
from .topics import client_config, start_client

__all__ = ["ProduceSummary", "produce"]


@dataclass
class ProduceSummary:
    sent: int = 0
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


async def produce(path: str | Path, settings: Settings, bootstrap: str, report: IO[str] | None = None,
                  include_bad: bool = False, rate: float | None = None,
                  on_sent: Callable[[int], None] | None = None, linger_ms: int = 5) -> ProduceSummary:
    """Send every good line to its category's topic, once (control events too: every worker reads them).

    Lines the codec refuses are reported and skipped, or with ``include_bad``
    sent as they are to the transactions topic, for the worker to dead-letter.
    ``rate`` paces sending (events per second) to imitate a live feed. ``on_sent(n)`` hears
    how many were sent so far, every 5,000 and at the end (a progress line). ``linger_ms``: how long
    the producer gathers a partition's records into one batch.
    """
    summary = ProduceSummary()
    good: list[tuple[tuple[int, int, int], str, str, bytes]] = []
    bad: list[bytes] = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                ev = decode(raw, settings.max_record_bytes)
            except Rejected as r:
                summary.skipped[r.reason.value] += 1
                if report is not None:
                    report.write(f"line {n}: {'sent raw' if include_bad else 'skipped'}: {r}\n")
                if include_bad:
                    bad.append(raw)
                continue
            good.append((event_order(ev.ts, ev.type, n), CATEGORY[ev.type], ev.account_id, raw))
    good.sort(key=lambda g: g[0])
    topics = settings.input_topics
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms, max_batch_size=256 * 1024,
                                acks="all", **client_config(settings))
    await start_client(producer, settings, bootstrap)
    try:
        pending: list[asyncio.Future[object]] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, (_, category, account, raw) in enumerate(good):
            # The partition Kafka's default partitioner would pick, named explicitly so the worker's shards
            # are exactly replay's; the control topic has one partition, which every worker reads.
            p = 0 if category == "control" else partition_for(account, settings.partitions)
            pending.append(await producer.send(topics[category], raw, key=account.encode(), partition=p))
            summary.records += 1
            summary.sent += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
                if on_sent is not None:
                    on_sent(summary.sent)
            if rate:
                ahead = (i + 1) / rate - (loop.time() - start)
                if ahead > 0.01:
                    await asyncio.sleep(ahead)
        for raw in bad:
            pending.append(await producer.send(topics["transactions"], raw))
            summary.records += 1
        await asyncio.gather(*pending)
        if on_sent is not None:
            on_sent(summary.sent)
    finally:
        await producer.stop()
    return summary
