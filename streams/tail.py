"""`riskmon tail`: prints decisions, once each, through the consumer API (:mod:`riskmon.streams.consumer`)."""
from __future__ import annotations

from typing import IO, Any, Callable

from riskmon.models.codec import dumps

from .consumer import DecisionStream
from .render import decision_line
from .settings import Settings

__all__ = ["tail"]


async def tail(settings: Settings, bootstrap: str, out: IO[str], as_json: bool = False, from_beginning: bool = True,
               max_count: int | None = None, idle_s: float | None = None, group: str | None = None,
               remember: int = 1_000_000, on_decision: Callable[[dict[str, Any]], None] | None = None,
               first_idle_s: float | None = None) -> dict[str, int]:
    """Print decisions until ``max_count`` or ``idle_s`` without one (None: forever); before the first
    one, wait ``first_idle_s`` instead if given (a worker that has just started takes a while).

    With a consumer group, the position committed is just after the last decision printed, so a
    second tail in the same group starts with the first decision this one did not print. Returns
    the counts: ``decisions`` printed, ``repeats`` (delivered twice, printed once), ``skipped``
    (records that are not decisions).
    """
    printed = 0
    stream = DecisionStream(bootstrap, settings, group, from_beginning,
                            idle_s if first_idle_s is None else first_idle_s, remember)
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
