"""`riskmon policy diff|push NEW.toml`: preview a policy update on the accounts as they stand, then send it.

The accounts as they stand come from a running deployment (its account table's changelog, read
whole: the last state written for each account) or from a log replayed under the policy in
force. The policy in force is the configured one (RISKMON_POLICY_FILE, or the shipped default)
with every update on the control topic applied in event-time order, as the workers apply them.
The preview itself is the core's (:mod:`riskmon.models.policy_diff`).
"""
from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import orjson

from riskmon.models.codec import decode, dumps
from riskmon.models.errors import Rejected
from riskmon.models.events import PolicyUpdate
from riskmon.models.monitor import Monitor
from riskmon.models.policy import Policy, default_policy, load_policy
from riskmon.models.state import AccountState

from .checkpoint import QUALITY_KEY_PREFIX, SHARD_KEY_PREFIX
from .settings import Settings

__all__ = ["changelog_topic", "policy_in_force", "push_policy", "read_topic", "running_states", "update_event"]


def changelog_topic(settings: Settings) -> str:
    """Where Faust keeps the account table (``accounts``) of the app ``RISKMON_APP_ID``."""
    return f"{settings.app_id}-accounts-changelog"


async def read_topic(settings: Settings, bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record the topic holds now, all partitions, in offset order per partition."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from .topics import client_config, start_client

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100, **client_config(settings))
    await start_client(consumer, settings, bootstrap)
    try:
        partitions = consumer.partitions_for_topic(topic) if topic in await consumer.topics() else None
        if not partitions:
            raise ValueError(f"topic {topic} does not exist on {bootstrap}: no deployment under RISKMON_APP_ID="
                             f"{settings.app_id} and RISKMON_TOPIC_PREFIX={settings.topic_prefix} has run there")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pending = set(tps)
        while pending:
            if loop.time() > deadline:
                raise TimeoutError(f"read {len(records)} records of {topic} in {timeout_s:.0f} s and did not reach its end")
            for batch in (await consumer.getmany(*pending, timeout_ms=500, max_records=10_000)).values():
                records.extend(batch)
            for tp in list(pending):
                hw = consumer.highwater(tp)  # the high watermark of a Fetch (right on Tansu, unlike ListOffsets)
                if hw is not None and await consumer.position(tp) >= hw:
                    pending.discard(tp)
        return records
    finally:
        await consumer.stop()


async def running_states(settings: Settings, bootstrap: str) -> list[AccountState]:
    """The last state written for each account of the running deployment."""
    latest: dict[bytes, bytes | None] = {}
    for r in await read_topic(settings, bootstrap, changelog_topic(settings)):
        if r.key is None or r.key.startswith(SHARD_KEY_PREFIX) or r.key.startswith(QUALITY_KEY_PREFIX):
            continue
        latest[r.key] = r.value
    return [orjson.loads(v) for v in latest.values() if v]


async def policy_in_force(settings: Settings, bootstrap: str, at_ms: int) -> tuple[Policy, Policy | None]:
    """The policy the workers have in force at event time ``at_ms``, and the candidate they judge in shadow then
    (None if none): the configured policy with the updates on the control topic applied as a worker applies
    them (in offset order, each to the policy in force at its own event time:
    :meth:`riskmon.models.monitor.Monitor.control`)."""
    monitor = Monitor("policy", load_policy(settings.policy_file) if settings.policy_file else default_policy())
    for r in await read_topic(settings, bootstrap, settings.input_topics["control"]):
        try:
            ev = decode(r.value)
            if isinstance(ev, PolicyUpdate):
                monitor.control(ev)
        except Rejected:
            continue  # refused by the workers too (dead-lettered)
    shadow = monitor.shadows.at(at_ms)
    return monitor.policy_at(at_ms), None if shadow is None else shadow[0]


def update_event(new: Policy | str, event_id: str, ts: str, shadow: str = "") -> dict[str, Any]:
    """The control event that puts ``new`` in force from ``ts``: every threshold, so that it means the same
    whatever was in force before. With ``shadow``: ``install`` puts ``new`` in shadow instead; ``promote`` and
    ``drop`` act on the candidate whose version ``new`` is (riskmon.models.shadow)."""
    event: dict[str, Any] = {"type": "policy_update", "event_id": event_id, "ts": ts,
                             "policy_version": new if isinstance(new, str) else new.version}
    if not isinstance(new, str):
        event["thresholds"] = new.thresholds
    if shadow:
        event["shadow"] = shadow
    decode(dumps(event))  # a bad --at or version is refused here, with its reason
    return event


async def push_policy(settings: Settings, bootstrap: str, event: dict[str, Any]) -> None:
    """Send the update to the control topic, which every worker reads whole."""
    from .produce import produce

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.jsonl"
        path.write_bytes(dumps(event) + b"\n")
        await produce(path, settings, bootstrap)
