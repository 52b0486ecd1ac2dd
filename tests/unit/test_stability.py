"""Population stability (models/stability.py): what the PSI says, and that a shard keeps it across a restart."""
from __future__ import annotations

import io
import pathlib
import pickle
import random

from riskmon.models.codec import decode, dumps
from riskmon.models.engine import Engine
from riskmon.models.events import event_order
from riskmon.models.monitor import Monitor
from riskmon.models.quality import ScoreQuality
from riskmon.models.simulate import simulate
from riskmon.models.stability import MIN_COUNT, Stability
from riskmon.streams.replay import replay

NAMES = ("utilisation", "balance")


def draw(rng: random.Random, shift: float) -> tuple[float, list[float]]:
    util = min(max(rng.gauss(0.4 + shift, 0.2), 0.0), 2.0)
    return min(0.02 + 0.1 * util, 1.0), [util, rng.lognormvariate(7 - 4 * shift, 1)]


def test_one_population_is_stable_and_a_shifted_one_is_not() -> None:
    rng = random.Random(1)
    same, moved = Stability(window=500), Stability(window=500)
    for _ in range(3000):
        for tracker in (same, moved):
            tracker.learned(*draw(rng, 0.0))
        same.scored(*draw(rng, 0.0))
        moved.scored(*draw(rng, 0.5))
    stable, shifted = same.psi(NAMES), moved.psi(NAMES)
    assert set(stable) == set(shifted) == {"score", *NAMES}
    assert max(stable.values()) < 0.1, stable
    assert min(shifted.values()) > 0.25, shifted


def test_no_psi_until_both_populations_hold_enough_statements() -> None:
    rng = random.Random(2)
    s = Stability()
    for _ in range(int(MIN_COUNT) + 20):
        s.scored(*draw(rng, 0.0))
    assert s.psi(NAMES) == {}, "nothing learned yet: no reference"
    for _ in range(int(MIN_COUNT) + 20):
        s.learned(*draw(rng, 0.0))
    assert set(s.psi(NAMES)) == {"score", *NAMES}


def test_the_window_forgets_what_it_saw_long_ago() -> None:
    rng = random.Random(3)
    s = Stability(window=200)
    for _ in range(2000):
        s.learned(*draw(rng, 0.0))
        s.scored(*draw(rng, 0.8))
    assert s.psi(NAMES)["utilisation"] > 0.25
    for _ in range(3000):  # the scored population comes back: the old shift has decayed away
        s.scored(*draw(rng, 0.0))
    assert s.psi(NAMES)["utilisation"] < 0.1
    ref, cur = s.counts()
    assert 195 < ref <= 200 and 195 < cur <= 200


def test_a_shard_keeps_its_stability_through_both_kinds_of_snapshot(tmp_path: pathlib.Path) -> None:
    events, _ = simulate(200, 120, seed=4)
    log = tmp_path / "ev.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    # With one model for the portfolio: the shards' scored statements against what its trainer learned from.
    summary = replay(log, io.BytesIO(), partitions=2, portfolio=True)
    engine = Engine(2, portfolio=True)
    ordered = sorted((decode(dumps(e)) for e in events), key=lambda e: event_order(e.ts, e.type, 0))
    for e in ordered:
        engine.process(e)
    assert engine.portfolio is not None and summary.psi and "score" in summary.psi
    parts = [m.stability for m in engine.monitors] + [engine.portfolio.stability]
    assert Stability.merged(parts, engine.monitors[0].spec.names) == summary.psi
    # A shard that learns its own model keeps both populations: the one replay ended with, rebuilt from the log,
    # then saved whole and saved as the stream saves it.
    summary = replay(log, io.BytesIO(), partitions=1, portfolio=False)
    assert summary.psi and "score" in summary.psi
    engine = Engine(1, portfolio=False)
    for e in ordered:
        engine.process(e)
    m = engine.monitors[0]
    names = m.spec.names
    assert m.stability.psi(names) == summary.psi
    assert Monitor.restore(m.dumps()).stability.psi(names) == summary.psi
    split = Monitor.restore(m.dumps(with_quality=False), m.dumps_quality())
    assert split.stability.psi(names) == summary.psi
    assert split.quality.auc() == m.quality.auc()
    # A quality snapshot saved before the histograms existed: the quality restores, stability starts afresh.
    old = Monitor.restore(m.dumps(with_quality=False), pickle.dumps(m.quality))
    assert isinstance(old.quality, ScoreQuality) and old.quality.auc() == m.quality.auc()
    assert old.stability.psi(names) == {}
