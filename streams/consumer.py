"""A downstream consumer of decisions, for Python teams: typed, at-least-once, each decision once.

>>> import asyncio
>>> from riskmon.streams.consumer import decisions
>>> async def main() -> None:
...     async with decisions("127.0.0.1:9092", group="collections") as stream:
...         async for d in stream:  # a riskmon.models.decisions.Decision
...             print(d.account_id, d.action, d.new_state, [r.code for r in d.reasons])
>>> callable(main)
True

Delivery is at least once, and the position a consumer group commits never
passes a decision the caller has not had: a decision counts as handled once the
caller asks for the next one, or leaves the ``async with`` block without an
exception (an exception leaves the decision it was handling to be delivered
again). Decision ids are deterministic, so one delivered twice (a worker redoing
work after a crash, or a group resuming) is passed over and counted in
``repeats``. A record that is not a decision this version can read is passed
over, counted in ``skipped`` and logged in one line; it never stops the stream.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from riskmon.models.decisions import Decision
from riskmon.models.errors import Rejected

from .settings import Settings
from .topics import client_config, start_client

__all__ = ["DecisionStream", "decisions"]

log = logging.getLogger(__name__)


class DecisionStream:
    """Decisions from the decisions topic; see the module's docstring. Use :func:`decisions` to make one.

    ``group``: a consumer group, whose committed position the stream resumes from and advances
    (None: no group, nothing committed). ``from_beginning``: where a group with no position, or no
    group, starts. ``idle_s``: stop after this long without a record (None: never). ``remember``:
    decision ids kept to spot repeats. ``shadow``: read what a candidate policy in shadow would decide instead
    (``PREFIX.shadow-decisions``).
    """

    def __init__(self, bootstrap: str, settings: Settings | None = None, group: str | None = None,
                 from_beginning: bool = True, idle_s: float | None = None, remember: int = 1_000_000,
                 shadow: bool = False) -> None:
        self.settings = settings or Settings()
        self.topic = self.settings.topic_shadow_decisions if shadow else self.settings.topic_decisions
        self.bootstrap, self.group, self.idle_s, self.remember = bootstrap, group, idle_s, remember
        self.from_beginning = from_beginning
        self.repeats = 0  # decisions delivered again and passed over
        self.skipped = 0  # records that are not decisions
        self._consumer: AIOKafkaConsumer | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._buffer: list[Any] = []  # records fetched, not yet looked at
        self._handed: tuple[TopicPartition, int] | None = None  # the record last given to the caller
        self._handled: dict[TopicPartition, int] = {}  # per partition: the offset after the last record handled
        self._committed: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> DecisionStream:
        self._consumer = AIOKafkaConsumer(
            self.topic, bootstrap_servers=self.bootstrap, group_id=self.group,
            auto_offset_reset="earliest" if self.from_beginning else "latest", enable_auto_commit=False,
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.settings.heartbeat_s * 1000), **client_config(self.settings),
        )
        await start_client(self._consumer, self.settings, self.bootstrap)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is None:
            self._mark_handled()  # left the block normally: the last decision was handled
        try:
            await self.commit()
        finally:
            if self._consumer is not None:
                await self._consumer.stop()

    def __aiter__(self) -> DecisionStream:
        return self

    async def __anext__(self) -> Decision:
        self._mark_handled()  # the caller asks for the next one: it is done with the last
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("use a DecisionStream inside `async with`")
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            while self._buffer:
                r = self._buffer.pop(0)
                tp = TopicPartition(r.topic, r.partition)
                d = self._read(r)
                if d is None:
                    self._handled[tp] = r.offset + 1  # nothing to hand over: handled as it stands
                    continue
                self._handed = (tp, r.offset + 1)
                return d
            await self.commit()
            batch = await consumer.getmany(timeout_ms=500)
            if batch:
                last = loop.time()
                for records in batch.values():
                    self._buffer.extend(records)
            elif self.idle_s is not None and loop.time() - last > self.idle_s:
                raise StopAsyncIteration

    async def commit(self) -> None:
        """Commit the group's position after every decision handled (a no-op without a group)."""
        if self.group is None or self._consumer is None:
            return
        todo = {tp: o for tp, o in self._handled.items() if self._committed.get(tp) != o}
        if not todo:
            return
        try:
            await self._consumer.commit(todo)
        except KafkaError as exc:  # a rebalance took a partition: its records come again, and are passed over
            log.warning("riskmon consumer: commit of %d partitions failed (%s); they will be delivered again",
                        len(todo), type(exc).__name__)
            return
        self._committed.update(todo)

    def _mark_handled(self) -> None:
        if self._handed is not None:
            tp, offset = self._handed
            self._handled[tp] = offset
            self._handed = None

    def _read(self, r: Any) -> Decision | None:
        """The record's decision, or None (counted) for a repeat or a record that is not one."""
        try:
            d = Decision.from_dict(orjson.loads(r.value))
        except (orjson.JSONDecodeError, Rejected, TypeError, ValueError) as exc:
            self.skipped += 1
            log.warning("riskmon consumer: %s[%d]@%d is not a decision: %s", r.topic, r.partition, r.offset,
                        str(exc)[:200])
            return None
        if d.decision_id in self._seen:
            self.repeats += 1
            return None
        self._seen[d.decision_id] = None
        if len(self._seen) > self.remember:
            self._seen.popitem(last=False)
        return d


def decisions(bootstrap: str | None = None, group: str | None = None, *, settings: Settings | None = None,
              from_beginning: bool = True, idle_s: float | None = None, remember: int = 1_000_000) -> DecisionStream:
    """A :class:`DecisionStream` on ``bootstrap`` (default: ``RISKMON_BROKER_URL``); use it with ``async with``.

    ``settings`` (default: read from the ``RISKMON_*`` environment) gives the topic prefix and the
    connection's security settings.
    """
    settings = settings or Settings()
    bootstrap = bootstrap or settings.broker_url
    if not bootstrap:
        raise ValueError("no broker: give decisions() a bootstrap address or set RISKMON_BROKER_URL")
    return DecisionStream(bootstrap, settings, group, from_beginning, idle_s, remember)
