"""One model for the portfolio (issue 15, item 1): one trainer learns every shard's outcomes in event-time
epochs and one canonical order, so decisions do not depend on the partition count."""
from __future__ import annotations

import io
import pathlib
import pickle
import random

import numpy as np
import orjson
import pytest
from scipy.stats import rankdata

from riskmon.models.codec import decode, dumps
from riskmon.models.engine import Engine
from riskmon.models.portfolio import EPOCH_MS, Portfolio, Revealed
from riskmon.models.quality import paired_auc_z
from riskmon.models.simulate import simulate
from riskmon.models.step import Outcome
from riskmon.streams.replay import replay
from riskmon.streams.trainer import ModelBook, Training, outcome_record, watermark_record

from .test_challenger import command, with_commands


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    events, _ = simulate(600, 150, seed=5)
    path = tmp_path_factory.mktemp("portfolio") / "ev.jsonl"
    path.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    return path


def _replay(path: pathlib.Path, partitions: int, portfolio: bool) -> bytes:
    out = io.BytesIO()
    replay(path, out, partitions=partitions, portfolio=portfolio)
    return out.getvalue()


def test_replay_with_1_4_and_16_partitions_gives_byte_identical_decisions(log: pathlib.Path) -> None:
    one, four, sixteen = (_replay(log, p, portfolio=True) for p in (1, 4, 16))
    assert one == four == sixteen
    decisions = [orjson.loads(line) for line in one.splitlines()]
    versions = {d["model_version"] for d in decisions}
    assert all(v.startswith("m.v") for v in versions)
    # The model learned as the portfolio went (a version a day with outcomes): the test compares learned models.
    assert max(int(v[3:]) for v in versions) >= 50
    # A model per partition is what made the partition count matter: it still does, for contrast.
    assert _replay(log, 1, portfolio=False) != _replay(log, 4, portfolio=False)


def _outcome(rng: random.Random) -> Outcome:
    return Outcome([rng.random() * 3 for _ in range(4)], rng.random(), rng.random() < 0.3)


def test_the_trainer_learns_the_same_model_whatever_order_the_shards_send_outcomes_in() -> None:
    rng = random.Random(3)
    revealed = [Revealed(d * EPOCH_MS + rng.randrange(EPOCH_MS), f"a{rng.randrange(50)}", (_outcome(rng), _outcome(rng)))
                for d in range(20) for _ in range(30)]
    revealed.sort(key=lambda r: r.ts)  # as replay reveals them; each account's in its own order
    models = []
    for seed in range(3):
        mixed = list(revealed)
        if seed:  # another partitioning: another interleaving of accounts, each account's order kept
            by_account: dict[str, list[Revealed]] = {}
            for r in revealed:
                by_account.setdefault(r.account_id, []).append(r)
            queues = list(by_account.values())
            shuffle = random.Random(seed)
            mixed = []
            while queues:
                q = shuffle.choice(queues)
                mixed.append(q.pop(0))
                if not q:
                    queues.remove(q)
        p = Portfolio()
        for r in mixed:
            p.offer(r)
        assert p.advance(25 * EPOCH_MS)
        models.append((pickle.dumps(p.model), p.version, p.outcomes_seen))
    assert models[0] == models[1] == models[2]
    assert models[0][1] == 20 and models[0][2] == 20 * 30 * 2  # a version per day whose outcomes it learned


def test_an_outcome_is_in_force_from_the_day_after_the_day_after_its_own() -> None:
    p = Portfolio()
    day = 10 * EPOCH_MS
    p.offer(Revealed(day + 5, "a", (Outcome([1.0], 0.5, True),)))
    for t in (day + 6, day + EPOCH_MS, day + 2 * EPOCH_MS - 1):  # its day, and the day after: not yet
        assert not p.advance(t) and p.model.n_learned == 0 and p.model_version == "m.v0"
    assert p.advance(day + 2 * EPOCH_MS) and p.model.n_learned == 1 and p.model_version == "m.v1"
    # Outcomes of an epoch learned already (a step a shard redid after a crash): dropped, counted.
    p.offer(Revealed(day + 5, "b", (Outcome([1.0], 0.5, False),)))
    assert p.late == 1 and not p.advance(day + 3 * EPOCH_MS) and p.model.n_learned == 1
    # The same event's outcomes twice before their epoch closes: learned once.
    for _ in range(2):
        p.offer(Revealed(day + 3 * EPOCH_MS, "c", (Outcome([1.0], 0.5, False),), event_id="e9"))
    assert p.advance(day + 5 * EPOCH_MS) and p.model.n_learned == 2


def test_a_promotion_takes_effect_in_every_shard_with_the_version_that_learns_its_day(log: pathlib.Path) -> None:
    events = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    challenge = command("2025-02-01T00:00:00Z", "challenge", "batch")
    runs = {}
    for name, cmds in (("challenged", (challenge,)), ("promoted", (challenge, command("2025-04-15T10:00:00Z", "promote")))):
        path = log.with_name(f"{name}.jsonl")
        path.write_bytes(b"".join(dumps(e) + b"\n" for e in with_commands(events, *cmds)))
        runs[name] = [_replay(path, p, portfolio=True) for p in (1, 4)]
        assert runs[name][0] == runs[name][1]
    assert runs["challenged"][0] == _replay(log, 4, portfolio=True), "a challenger decides nothing"
    before, after = ([orjson.loads(x) for x in runs[n][0].splitlines()] for n in ("challenged", "promoted"))
    # The promotion's day is learned into the version in force from the day after the next (lag one day).
    cut = "2025-04-17T00:00:00Z"
    assert [d for d in before if d["event_ts"] < cut] == [d for d in after if d["event_ts"] < cut]
    assert [d for d in before if d["event_ts"] >= cut] != [d for d in after if d["event_ts"] >= cut]
    engine = Engine(4, portfolio=True)
    for line in log.with_name("promoted.jsonl").read_bytes().splitlines():
        engine.process(decode(line))
    assert engine.portfolio is not None and engine.portfolio.model.learner == "batch"
    assert all(m.model is engine.portfolio.model for m in engine.monitors)
    assert len({m.model_version for m in engine.monitors}) == 1


def _sun_xu(labels: list[bool], a: list[float], b: list[float]) -> float:
    """DeLong's z by Sun and Xu's midrank algorithm (IEEE Signal Processing Letters, 2014): another route."""
    y = np.asarray(labels, dtype=bool)
    m, n = int(y.sum()), int((~y).sum())
    v01, v10 = [], []
    for s in (np.asarray(a), np.asarray(b)):
        tz, tx, ty = rankdata(s), rankdata(s[y]), rankdata(s[~y])
        v01.append((tz[y] - tx) / n)
        v10.append(1 - (tz[~y] - ty) / m)
    aucs = [float(v.mean()) for v in v01]
    cov = np.cov(np.vstack(v01)) / m + np.cov(np.vstack(v10)) / n
    return (aucs[0] - aucs[1]) / float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]) ** 0.5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_handover_test_is_delongs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(500) < 0.2
    a = y * 0.8 + rng.normal(size=500)
    b = y * 0.5 + rng.normal(size=500) + 0.3 * a
    auc_a, auc_b, z = paired_auc_z(list(y), list(a), list(b))  # type: ignore[misc]
    assert z == pytest.approx(_sun_xu(list(y), list(a), list(b)), rel=1e-9)
    assert paired_auc_z([True, False], [0.1, 0.2], [0.2, 0.1]) is not None
    assert paired_auc_z([True, True], [0.1, 0.2], [0.2, 0.1]) is None


def test_the_trainer_waits_for_every_partition_and_its_records_say_what_each_version_learned() -> None:
    """streams.trainer without Kafka: what the model topic carries, and a trainer restarted from it."""
    book = ModelBook()
    t = Training(book, 2, Portfolio())
    day = EPOCH_MS
    t.take(0, outcome_record(0, Revealed(10 * day + 5, "a", (Outcome([1.0, 2.0], 0.1, True),), "e1")))
    t.take(1, watermark_record(0, 12 * day + 7))
    assert t.publishable() is None  # partition 1 has said nothing: it may still reveal anything
    t.take(2, watermark_record(1, None))  # idle: no longer waited for
    until = t.publishable()
    assert until == 12 * day
    records = t.learn(until, [], 3)
    for record in records:
        book.add(record)
    heads = [orjson.loads(r[4:4 + int.from_bytes(r[:4], "big")]) for r in records]
    lineage = next(h["lineage"] for h in heads if h["new"] and h["v"] == "m.v1")
    assert lineage == {"outcomes": 1, "defaults": 1, "first_outcome_ts": 10 * day + 5, "learned_before": 11 * day,
                       "learner": "logistic", "features": lineage["features"], "handed_over": False}
    # The day of the outcome (10) is learned into the version in force from boundary 11 (events of day 12 on).
    assert book.at(10 * day)[0] == "m.v0" and book.at(11 * day)[0] == "m.v1" and book.at(13 * day) is None
    version = book.versions[-1]
    assert version.name == "m.v1" and book.at(11 * day)[1].n_learned == 1
    assert book.last["through"] == until and book.last["offset"] == 3
    # A trainer restarted from the book goes on from the last record: same model, same place.
    again = Training(book, 2, Portfolio())
    assert again.portfolio.model.n_learned == 1 and again.offset == 3 and again.marks == {0: 12 * day + 7, 1: None}
    # The same outcome read again (its partition redid the round): its day is learned, so it is dropped.
    again.take(0, outcome_record(0, Revealed(10 * day + 5, "a", (Outcome([1.0, 2.0], 0.1, True),), "e1")))
    assert again.late == 1 and again.portfolio.model.n_learned == 1
