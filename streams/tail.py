"""A downstream consumer of decisions: prints them, once each."""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import IO, Any, Callable

import orjson
from aiokafka import AIOKafkaConsumer

from .render import decision_line
from .settings import Settings
from .topics import client_config, start_client

__all__ = ["tail"]


async def tail(settings: Settings, bootstrap: str, out: IO[str], as_json: bool = False, from_beginning: bool = True,
               max_count: int | None = None, idle_s: float | None = None, group: str | None = None,
               remember: int = 1_000_000, on_decision: Callable[[dict[str, Any]], None] | None = None) -> dict[str, int]:
    """Print decisions until ``max_count`` or ``idle_s`` without one (None: forever).

    Decision ids are deterministic, so a decision delivered twice (a worker
    redoing work after a crash) is printed once; the count of such repeats is
    returned as ``repeats``.
    """
    consumer = AIOKafkaConsumer(
        settings.topic_decisions, bootstrap_servers=bootstrap, group_id=group,
        auto_offset_reset="earliest" if from_beginning else "latest", enable_auto_commit=group is not None,
        **client_config(settings),
    )
    await start_client(consumer, settings, bootstrap)
    seen: OrderedDict[str, None] = OrderedDict()
    counts = {"decisions": 0, "repeats": 0}
    loop = asyncio.get_running_loop()
    last = loop.time()
    try:
        while max_count is None or counts["decisions"] < max_count:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch:
                if idle_s is not None and loop.time() - last > idle_s:
                    break
                continue
            last = loop.time()
            for records in batch.values():
                for r in records:
                    if max_count is not None and counts["decisions"] >= max_count:
                        break
                    d = orjson.loads(r.value)
                    if d["decision_id"] in seen:
                        counts["repeats"] += 1
                        continue
                    seen[d["decision_id"]] = None
                    if len(seen) > remember:
                        seen.popitem(last=False)
                    counts["decisions"] += 1
                    if on_decision is not None:
                        on_decision(d)
                    out.write((r.value.decode() if as_json else decision_line(d)) + "\n")
            out.flush()
    finally:
        await consumer.stop()
    return counts
