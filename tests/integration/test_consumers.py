"""Downstream consumers on the real broker: a consumer group resumes at the first decision it did not deliver."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from riskmon.models.codec import dumps
from riskmon.models.decisions import Decision, Reason
from riskmon.streams.broker import EmbeddedBroker
from riskmon.streams.consumer import decisions
from riskmon.streams.settings import Settings
from riskmon.streams.topics import create_topics

pytestmark = pytest.mark.integration

N = 250


def _decision(i: int) -> Decision:
    return Decision(f"d{i:04d}", f"A{i % 37:07d}", "warning", "normal", "watch", 0.5 + i / 1000,
                    (Reason("SCORE_WATCH", f"risk score {0.5 + i / 1000:.2f} >= 0.35", 1),), "p0.v0", "policy-1",
                    f"e{i}", 1735689600000 + i * 1000, 500_000, 500_000)


def _deployment(broker: EmbeddedBroker, name: str) -> Settings:
    """Its own topics on the session broker, holding N decisions (one of them delivered twice) and a
    record that is not a decision."""
    settings = Settings(broker_url=broker.url, broker_kind="tansu", topic_prefix=f"{name}-{os.getpid()}",
                        session_timeout_s=6.0)

    async def fill() -> None:
        await create_topics(settings, broker.url)
        p = AIOKafkaProducer(bootstrap_servers=broker.url)
        await p.start()
        try:
            for i in range(N):
                d = _decision(i)
                await p.send(settings.topic_decisions, dumps(d.to_dict()), key=d.account_id.encode())
                if i == 100:  # a worker redoing a round delivers it again
                    await p.send(settings.topic_decisions, dumps(d.to_dict()), key=d.account_id.encode())
                if i == 150:
                    await p.send(settings.topic_decisions, b"not a decision", key=d.account_id.encode())
            await p.flush()
        finally:
            await p.stop()

    asyncio.run(fill())
    return settings


def _tail(settings: Settings, *args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKMON_")} | settings.to_env()
    out = subprocess.run([sys.executable, "-m", "riskmon.streams.cli", "tail", "--json", *args], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_tail_with_a_group_resumes_at_the_first_decision_it_did_not_print(broker: EmbeddedBroker) -> None:
    settings = _deployment(broker, "tailgroup")
    first = _tail(settings, "--group", "g1", "--max", "3")
    rest = _tail(settings, "--group", "g1", "--idle", "6")
    assert len(first) == 3
    ids = [Decision.from_dict(orjson.loads(line)).decision_id for line in first + rest]
    assert len(ids) == len(set(ids)) == N, (len(first), len(rest), len(set(ids)))
    # What tail prints is the record as the worker wrote it, byte for byte.
    assert set(first + rest) == {dumps(_decision(i).to_dict()).decode() for i in range(N)}


def test_the_consumer_api_hands_typed_decisions_once_and_redelivers_the_one_that_failed(broker: EmbeddedBroker) -> None:
    settings = _deployment(broker, "api")

    async def take(n: int, fail_at: int | None = None) -> tuple[list[Decision], Any]:
        got: list[Decision] = []
        stream = decisions(broker.url, group="g2", settings=settings, idle_s=6)
        try:
            async with stream:
                async for d in stream:
                    if len(got) == fail_at:
                        raise RuntimeError("the downstream system is down")
                    got.append(d)
                    if len(got) == n:
                        break
        except RuntimeError:
            pass
        return got, stream

    first, _ = asyncio.run(take(N, fail_at=10))  # handled 10, failed on the 11th
    rest, stream = asyncio.run(take(N))
    assert all(isinstance(d, Decision) and d.reasons[0].code == "SCORE_WATCH" for d in first + rest)
    assert len(first) == 10 and len(rest) == N - 10
    assert {d.decision_id for d in first} | {d.decision_id for d in rest} == {f"d{i:04d}" for i in range(N)}
    assert stream.skipped == 1 and stream.repeats == 1
