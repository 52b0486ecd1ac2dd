"""The broadcast control feed: every worker reads the whole control topic, and every partition applies it.

Control events (policy updates, breaker commands) govern the whole portfolio. They
travel on a topic of one partition that no consumer group splits: each worker reads
all of it with a consumer of its own (the broadcast pattern), keeps what it read
(control topics are small: a few records a day), and hands every record to each
input partition it owns. Each partition merges them with its account events in
event-time order (:mod:`streams.hold`), records the control offsets it applied in its
snapshot (:mod:`streams.checkpoint`), and so resumes after a crash exactly where it
stopped, as for any other topic. One record published once reaches every partition,
whoever published it.
"""
from __future__ import annotations

import bisect
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from .settings import Settings
from .topics import client_config, start_client

__all__ = ["ControlFeed", "ControlRecord"]

log = logging.getLogger("riskmon.control")

# (offset, key, value) of one control record.
ControlRecord = tuple[int, bytes | None, bytes | None]


class ControlFeed:
    """The control topic, read from its start by a consumer outside the group.

    >>> feed = ControlFeed.__new__(ControlFeed); feed.offsets, feed.records = [0, 1, 4], [(0, None, b"a"), (1, None, b"b"), (4, None, b"c")]
    >>> [r[0] for r in feed.since(1)], [r[0] for r in feed.since(2)], feed.since(5)
    ([1, 4], [4], [])
    """

    def __init__(self, settings: Settings, bootstrap: str, fetch_wait_ms: int = 100, topic: str | None = None) -> None:
        """``topic``: another topic read the same way (the portfolio model's versions, streams.trainer)."""
        self.settings = settings
        self.bootstrap = bootstrap
        self.topic = topic or settings.input_topics["control"]
        self.tp = TopicPartition(self.topic, 0)
        self.fetch_wait_ms = fetch_wait_ms
        self.offsets: list[int] = []
        self.records: list[ControlRecord] = []
        self.consumer: Any = None  # made in start(): aiokafka clients belong to the running event loop
        self.reading = False  # started and assigned the control partition, not stopped
        self.position = 0  # the next offset the feed will read: past every record, marker and deleted range read
        self.log_level = logging.INFO if topic is None else logging.DEBUG  # model versions come daily: not news

    async def start(self) -> None:
        # Short fetch waits: Tansu holds a fetch open for most of its wait even when records come
        # (see streams.tansu_fetch_wait); against Kafka a fetch answers as soon as a record is there.
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_wait_ms, **client_config(self.settings))
        await start_client(self.consumer, self.settings, self.bootstrap)
        self.consumer.assign([self.tp])
        await self.consumer.seek_to_beginning(self.tp)
        self.reading = True

    async def stop(self) -> None:
        self.reading = False
        if self.consumer is not None:
            await self.consumer.stop()

    async def poll(self, timeout_ms: int = 200) -> int:
        """Fetch what the topic holds beyond what was read; how many records came."""
        got = await self.consumer.getmany(self.tp, timeout_ms=timeout_ms, max_records=10_000)
        n = 0
        for m in got.get(self.tp, ()):
            if self.offsets and m.offset <= self.offsets[-1]:
                continue  # read again after a reconnect
            self.offsets.append(m.offset)
            self.records.append((m.offset, m.key, m.value))
            n += 1
        if n:
            log.log(self.log_level, "%s: %d record(s) read, up to offset %d", self.topic, n, self.offsets[-1])
        self.position = await self.consumer.position(self.tp)
        return n

    def highwater(self) -> int | None:
        """The offset after the newest record the broker held at the last fetch (None before one)."""
        if not self.reading:  # not yet, or no longer, assigned: nothing is known
            return None
        hw: Any = self.consumer.highwater(self.tp)
        return None if hw is None or hw < 0 else int(hw)

    def caught_up(self, offset: int) -> bool:
        """Whether a partition whose next control offset is ``offset`` has had everything the topic holds.

        The feed must have read to the broker's end, and handed over every record it read from
        ``offset`` on. Offsets hold no record everywhere (transaction markers, a prefix deleted by
        retention), so comparing ``offset`` itself with the end would wait forever there.

        >>> feed = ControlFeed.__new__(ControlFeed); feed.offsets, feed.records, feed.position = [3], [(3, None, b"a")], 6
        >>> feed.highwater = lambda: 6
        >>> feed.caught_up(0), feed.caught_up(4), feed.caught_up(6)
        (False, True, True)
        """
        hw = self.highwater()
        return hw is not None and self.position >= hw and not self.since(offset)

    def since(self, offset: int) -> list[ControlRecord]:
        """The records read at ``offset`` and after, in order."""
        return self.records[bisect.bisect_left(self.offsets, offset):]
