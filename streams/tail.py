"""`riskmon tail`: prints decisions, once each, through the consumer API (:mod:`riskmon.streams.consumer`)."""
from __future__ import annotations

import asyncio
from typing import IO, Any, Awaitable, Callable

import orjson

from riskmon.models.codec import dumps

from .consumer import DecisionStream
from .render import decision_line
from .settings import Settings

__all__ = ["follow_deadletters", "settled_by", "tail"]


async def tail(settings: Settings, bootstrap: str, out: IO[str], as_json: bool = False, from_beginning: bool = True,
               max_count: int | None = None, idle_s: float | None = None, group: str | None = None,
               remember: int = 1_000_000, on_decision: Callable[[dict[str, Any]], None] | None = None,
               first_idle_s: float | None = None, shadow: bool = False) -> dict[str, int]:
    """Print decisions until ``max_count`` or ``idle_s`` without one (None: forever); before the first
    one, wait ``first_idle_s`` instead if given (a worker that has just started takes a while).

    With a consumer group, the position committed is just after the last decision printed, so a
    second tail in the same group starts with the first decision this one did not print. Returns
    the counts: ``decisions`` printed, ``repeats`` (delivered twice, printed once), ``skipped``
    (records that are not decisions). ``shadow``: a candidate policy's decisions in shadow instead.
    """
    printed = 0
    stream = DecisionStream(bootstrap, settings, group, from_beginning,
                            idle_s if first_idle_s is None else first_idle_s, remember, shadow)
    async with stream:
        if max_count is None or max_count > 0:
            async for d in stream:
                record = d.to_dict()
                if on_decision is not None:
                    on_decision(record)
                out.write((dumps(record).decode() if as_json else decision_line(record)) + "\n")
                out.flush()
                printed += 1
                stream.idle_s = idle_s
                if max_count is not None and printed >= max_count:
                    break
    return {"decisions": printed, "repeats": stream.repeats, "skipped": stream.skipped}


async def follow_deadletters(settings: Settings, bootstrap: str, err: IO[str]) -> None:
    """One line on ``err`` per record dead-lettered from now on (``riskmon run`` shows them as they happen)."""
    from aiokafka import AIOKafkaConsumer

    from .topics import client_config, start_client

    consumer = AIOKafkaConsumer(settings.topic_deadletter, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, **client_config(settings))
    await start_client(consumer, settings, bootstrap)
    try:
        while True:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    h = {k: v.decode(errors="replace") for k, v in (r.headers or ())}
                    err.write(f"riskmon: dead letter ({h.get('riskmon-reason', '?')}) from {h.get('riskmon-topic', '?')}"
                              f"[{h.get('riskmon-partition', '?')}]@{h.get('riskmon-offset', '?')}: "
                              f"{h.get('riskmon-detail', '')[:160]}\n")
            err.flush()
    finally:
        await consumer.stop()


async def settled_by(settings: Settings, bootstrap: str, cause_event_id: str, wait_s: float,
                     send: Awaitable[Any]) -> list[dict[str, Any]]:
    """Await ``send`` (publishing a control event), then the decisions it caused, for up to ``wait_s``.

    The decisions topic is read from where it ended before the send, so only what follows counts;
    a decision delivered twice (a worker redoing a round) is listed once.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from .topics import client_config, start_client

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **client_config(settings))
    try:
        await start_client(consumer, settings, bootstrap)
    except BaseException:
        if asyncio.iscoroutine(send):
            send.close()  # never sent: the broker is out of reach (the error says how)
        raise
    found: dict[str, dict[str, Any]] = {}
    try:
        await consumer.topics()  # fetches the cluster's metadata
        parts = consumer.partitions_for_topic(settings.topic_decisions) or set()
        tps = [TopicPartition(settings.topic_decisions, p) for p in sorted(parts)]
        consumer.assign(tps)
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, end)
        await send
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=min(500, max(1, int((deadline - loop.time()) * 1000))))
            for records in batch.values():
                for r in records:
                    try:
                        d = orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(d, dict) and d.get("cause_event_id") == cause_event_id:
                        found.setdefault(str(d.get("decision_id")), d)
    finally:
        await consumer.stop()
    return sorted(found.values(), key=lambda d: (str(d.get("account_id")), str(d.get("action"))))
