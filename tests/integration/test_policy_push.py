"""`riskmon policy diff|push` against a running deployment on a real broker."""
from __future__ import annotations

import asyncio
import pathlib
import time

import orjson
import pytest

from riskmon.models.codec import decode
from riskmon.models.engine import Engine
from riskmon.models.events import PolicyUpdate, event_order
from riskmon.models.policy import default_policy, load_policy
from riskmon.models.policy_diff import policy_diff
from riskmon.models.simulate import simulate
from riskmon.streams.broker import EmbeddedBroker
from riskmon.streams.cli import main
from riskmon.streams.policy_push import read_topic, running_states
from riskmon.streams.produce import produce

from .conftest import Cluster, diff, replay_decisions, write_log

pytestmark = pytest.mark.integration

TIGHT = 'version = "tight-1"\n[dpd]\nlimit = 11\nfreeze = 21\nclose = 31\n'


def test_a_push_that_would_close_more_than_the_breaker_allows_is_refused_unless_forced(
        broker: EmbeddedBroker, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    events, _ = simulate(300, 120, seed=23)
    log = write_log(tmp_path / "ev.jsonl", events)
    expected = replay_decisions(log)
    cluster = Cluster(broker, tmp_path)
    for k, v in cluster.settings.to_env().items():
        monkeypatch.setenv(k, v)
    policy = tmp_path / "tight.toml"
    policy.write_text(TIGHT)
    try:
        asyncio.run(produce(log, cluster.settings, cluster.bootstrap))
        cluster.start_worker()
        got, _ = cluster.decisions(len(expected))
        assert sorted(got) == sorted(expected), diff(got, expected)

        # The deployment's accounts as they stand are replay's final states, once the last snapshot is written.
        engine = Engine(cluster.settings.partitions)
        for ev in sorted((decode(orjson.dumps(e)) for e in events), key=lambda e: event_order(e.ts, e.type, 0)):
            engine.process(ev)
        deadline = time.monotonic() + 30
        while True:
            states = asyncio.run(running_states(cluster.settings, cluster.bootstrap))
            if sorted(states, key=lambda s: s["id"]) == sorted(engine.states.values(), key=lambda s: s["id"]):
                break
            assert time.monotonic() < deadline, f"{len(states)} states read, {len(engine.states)} expected"
            time.sleep(1)
        expected_diff = policy_diff(engine.states.values(), default_policy(), load_policy(policy))
        assert expected_diff.refused and expected_diff.closures > 0

        assert main(["policy", "diff", str(policy)]) == 0
        assert capsys.readouterr().out.splitlines() == expected_diff.lines()
        assert main(["policy", "push", str(policy)]) == 1
        err = capsys.readouterr().err
        assert (f"refused: it would close {expected_diff.closures} lines at once, the breaker allows "
                f"{expected_diff.allowed_closures}") in err
        control = cluster.settings.input_topics["control"]
        assert asyncio.run(read_topic(cluster.settings, cluster.bootstrap, control)) == [], "nothing was sent"

        # The same policy as a candidate in shadow acts on nobody; promoting it is an update like the push above,
        # previewed and refused past the breaker alike.
        assert main(["policy", "shadow", str(policy), "--event-id", "shadow-tight-1"]) == 0
        assert "tight-1 judged in shadow, its decisions on" in capsys.readouterr().err
        assert main(["policy", "promote", "tight-1"]) == 1
        said = capsys.readouterr()
        assert said.out.splitlines() == expected_diff.lines()
        assert f"policy tight-1 refused: it would close {expected_diff.closures} lines at once" in said.err
        assert main(["policy", "promote", "other-9"]) == 1
        assert "no candidate 'other-9' in shadow" in capsys.readouterr().err

        assert main(["policy", "push", str(policy), "--force", "--event-id", "push-tight-1"]) == 0
        assert "forced past the breaker" in capsys.readouterr().err
        assert main(["policy", "drop", "tight-1", "--event-id", "drop-tight-1"]) == 0
        assert "tight-1 dropped" in capsys.readouterr().err
        sent = [decode(r.value) for r in asyncio.run(read_topic(cluster.settings, cluster.bootstrap, control))]
        assert all(isinstance(e, PolicyUpdate) for e in sent)
        assert [(e.event_id, e.shadow, e.policy_version) for e in sent] == [  # type: ignore[union-attr]
            ("shadow-tight-1", "install", "tight-1"), ("push-tight-1", "", "tight-1"), ("drop-tight-1", "drop", "tight-1")]
        for e in sent[:2]:
            assert default_policy().updated(e.thresholds, e.policy_version) == load_policy(policy)  # type: ignore[union-attr]
    finally:
        cluster.stop()
