"""Champion and challenger on a real broker: `riskmon model challenge` and `riskmon model promote` go through the
control topic, and the worker's decisions are replay's with the same commands at their event times."""
from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys

import orjson
import pytest

from riskmon.models.codec import parse_ts
from riskmon.models.simulate import simulate
from riskmon.streams.broker import EmbeddedBroker
from riskmon.streams.produce import produce

from .conftest import Cluster, diff, replay_decisions, write_log

pytestmark = pytest.mark.integration

CHALLENGE = {"type": "model_command", "event_id": "challenge-q1", "ts": "2025-02-01T00:00:00Z", "command": "challenge",
             "learner": "batch", "note": "a mini-batch model"}
PROMOTE = {"type": "model_command", "event_id": "promote-q2", "ts": "2025-05-01T00:00:00Z", "command": "promote",
           "note": "won on the same outcomes"}


def test_a_challenger_is_started_and_promoted_from_the_command_line(broker: EmbeddedBroker, tmp_path: pathlib.Path) -> None:
    cluster = Cluster(broker, tmp_path, model_scope="portfolio")  # the trainer takes the commands
    try:
        # 800 accounts over 150 days: by May the challenger has taken over from the scorecard it starts from
        # (200 defaults among the latest 1,000 outcomes), so its promotion shows in the decisions.
        events, _ = simulate(800, 150, seed=11)
        log = write_log(tmp_path / "ev.jsonl", events)
        expected = replay_decisions(write_log(tmp_path / "with.jsonl", [*events, CHALLENGE, PROMOTE]), portfolio=True)
        plain = replay_decisions(log, portfolio=True)
        promoted_at = parse_ts(PROMOTE["ts"])
        late = [orjson.loads(d) for d in expected if parse_ts(orjson.loads(d)["event_ts"]) >= promoted_at]
        assert late and sorted(expected) != sorted(plain), "the promotion changes the decisions after it"
        asyncio.run(produce(log, cluster.settings, cluster.bootstrap))
        env = dict(os.environ) | cluster.settings.to_env()
        for cmd in (CHALLENGE, PROMOTE):
            argv = [sys.executable, "-m", "riskmon.streams.cli", "model", cmd["command"], "--at", cmd["ts"],
                    "--event-id", cmd["event_id"], "--note", cmd["note"]]
            if "learner" in cmd:
                argv += ["--learner", cmd["learner"]]
            out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90)
            assert out.returncode == 0, out.stderr
            assert f"model: {cmd['command']} sent to" in out.stderr and "which every worker reads" in out.stderr
        cluster.start_worker()
        got, _ = cluster.decisions(len(expected))
        assert sorted(got) == sorted(expected), diff(got, expected)
    finally:
        cluster.stop()
