"""The breaker on a real broker: a bad policy push is held by the worker, and `riskmon breaker release` releases it."""
from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
from typing import Any

import orjson
import pytest

from riskmon.models.simulate import simulate
from riskmon.streams.broker import EmbeddedBroker
from riskmon.streams.produce import produce

from .conftest import Cluster, diff, replay_decisions, write_log

pytestmark = pytest.mark.integration

PUSH = {"type": "policy_update", "event_id": "push-oops", "ts": "2025-04-01T00:00:00Z", "policy_version": "oops-1",
        "thresholds": {"dpd.watch": 1, "dpd.limit": 1, "dpd.freeze": 1, "dpd.close": 1, "breaker.min_count": 3}}


def test_a_bad_push_is_held_by_the_worker_and_released_from_the_command_line(broker: EmbeddedBroker, tmp_path: pathlib.Path) -> None:
    cluster = Cluster(broker, tmp_path)
    try:
        events, _ = simulate(300, 120, seed=21)
        log = write_log(tmp_path / "ev.jsonl", [*events, PUSH])
        expected = replay_decisions(log)
        held = [d for d in expected if orjson.loads(d)["action"] == "held"]
        assert held, "the push trips the breaker"
        asyncio.run(produce(log, cluster.settings, cluster.bootstrap))
        cluster.start_worker()
        got, _ = cluster.decisions(len(expected))
        assert sorted(got) == sorted(expected), diff(got, expected)

        # An operator releases the held closures; the command takes effect after the last event.
        command = {"type": "breaker_command", "event_id": "cmd-release-1", "ts": "2025-06-01T00:00:00Z",
                   "command": "release", "action": "closure", "note": "reviewed: the push was intended"}
        env = dict(os.environ) | cluster.settings.to_env()
        out = subprocess.run([sys.executable, "-m", "riskmon.streams.cli", "breaker", "release", "--action", "closure",
                              "--at", command["ts"], "--event-id", command["event_id"], "--note", command["note"]],
                             env=env, capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        assert "which every worker reads" in out.stderr
        after = replay_decisions(write_log(tmp_path / "ev2.jsonl", [*events, PUSH, command]))
        released = [orjson.loads(d) for d in after if orjson.loads(d)["reasons"][0]["code"] == "BREAKER_RELEASED"]
        assert released and all(d["action"] == "closure" for d in released)
        # The command says what it settled: a line per released closure, and the count.
        assert f"breaker: {len(released)} held move{'' if len(released) == 1 else 's'} released" in out.stderr
        assert sorted(line.split()[1] for line in out.stdout.splitlines()) == sorted(d["account_id"] for d in released)
        got, _ = cluster.decisions(len(after))
        assert sorted(got) == sorted(after), diff(got, after)
    finally:
        cluster.stop()
