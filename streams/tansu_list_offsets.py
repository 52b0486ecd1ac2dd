"""Workaround for Tansu 0.6.0's ListOffsets(LATEST) fault; active only against Tansu.

The fault: ListOffsets(LATEST) answers the base offset of the newest record
batch + 1, not the high watermark (after 1 record and a batch of 100 it says 2,
not 101). Faust asks for it to know where changelog recovery ends, so tables
recovered 9,990 of 10,000 keys and the rocksdb store refused to start
("persisted offset ... is higher than the last offset in that topic").

The fix: the high watermark in a Fetch response is right, so for every
partition that ListOffsets says is not empty, fetch from the last offset it
named and read the high watermark off the response.
"""
from __future__ import annotations

import asyncio
from typing import Any, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ["true_end_offsets", "install"]

_installed = False


async def true_end_offsets(bootstrap: str, reported: Mapping[Any, int], timeout_s: float = 10.0,
                           **client_config: Any) -> dict[Any, int]:
    """Correct ``reported`` end offsets with the high watermark of a Fetch."""
    out = dict(reported)
    todo = {tp: off for tp, off in reported.items() if off > 0}
    if not todo:
        return out
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **client_config)
    await consumer.start()
    try:
        tps = [TopicPartition(tp.topic, tp.partition) for tp in todo]
        consumer.assign(tps)
        for tp, off in zip(tps, todo.values()):
            consumer.seek(tp, off - 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pending = set(tps)
        while pending and loop.time() < deadline:
            await consumer.getmany(*pending, timeout_ms=200, max_records=1)
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is not None:
                    pending.discard(tp)
        if pending:
            raise TimeoutError(f"no high watermark from the broker for {sorted(map(str, pending))}")
        for orig, tp in zip(todo, tps):
            out[orig] = max(out[orig], int(consumer.highwater(tp)))
    finally:
        await consumer.stop()
    return out


def install(bootstrap: str, **client_config: Any) -> None:
    """Make the end offsets Faust's driver reads for changelog recovery come from Fetch."""
    global _installed
    if _installed:
        return
    from . import faust_internals

    async def correct(reported: Mapping[Any, int]) -> Mapping[Any, int]:
        return await true_end_offsets(bootstrap, reported, **client_config)

    faust_internals.wrap_highwaters(correct)
    _installed = True
