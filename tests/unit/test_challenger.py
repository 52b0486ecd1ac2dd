"""Champion and challenger (issue 15, item 4): a challenger learns and is compared in shadow, never deciding,
until a control event promotes it; replay, the stream processor and a restored shard agree."""
from __future__ import annotations

import copy
import io
import pickle
import pathlib
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from riskmon.models.codec import decode, dumps, parse_ts
from riskmon.models.engine import Engine
from riskmon.models.errors import Rejected
from riskmon.models.events import event_order
from riskmon.models.monitor import Monitor
from riskmon.models.portfolio import Revealed
from riskmon.models.simulate import simulate
from riskmon.streams.metrics import Metrics
from riskmon.streams.replay import replay
from riskmon.streams.tools.report import ReportCollector, render_html

from .test_metrics import samples
from .test_processor import P, run_stream


def command(at: str, cmd: str, learner: str | None = None, eid: str | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"type": "model_command", "event_id": eid or f"m-{cmd}", "ts": at, "command": cmd,
                         "note": "quarterly challenger"}
    if learner is not None:
        e["learner"] = learner
    return e


def with_commands(events: list[dict], *cmds: dict) -> list[dict]:
    return sorted(events + list(cmds), key=lambda e: parse_ts(e["ts"]))


def decisions(tmp_path: pathlib.Path, events: list[dict], name: str) -> tuple[list[dict], Any]:
    log = tmp_path / f"{name}.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    out = io.BytesIO()
    summary = replay(log, out, partitions=P, portfolio=True)  # one model for the portfolio: its trainer holds the models
    return [orjson.loads(d) for d in out.getvalue().splitlines()], summary


@pytest.fixture(scope="module")
def portfolio() -> list[dict]:
    # 800 accounts: enough defaults by May for a learned model to take over from the scorecard (200 among the
    # latest 1,000 outcomes), so that a promotion shows.
    return simulate(800, 150, seed=11)[0]


def test_a_challenger_never_decides_and_a_promotion_puts_it_in_force(portfolio: list[dict], tmp_path: pathlib.Path) -> None:
    base, plain = decisions(tmp_path, portfolio, "plain")
    challenge = command("2025-02-01T00:00:00Z", "challenge", "batch")
    dropped, summary = decisions(tmp_path, with_commands(portfolio, challenge, command("2025-05-01T00:00:00Z", "drop")),
                                 "dropped")
    assert dropped == base, "a challenger learning in shadow, then dropped, changes no decision"
    assert plain.challenge is None and summary.challenge is not None
    champion, challenger, n = summary.challenge
    assert n > 200 and champion is not None and challenger is not None
    # The portfolio's trainer takes the promotion in order with the outcomes of its day: the version that learns
    # that day is in force from the day after it (models.portfolio), 2 days after the command.
    promote_at = parse_ts("2025-05-03T00:00:00Z")
    promoted, _ = decisions(tmp_path, with_commands(portfolio, challenge, command("2025-05-01T00:00:00Z", "promote")),
                            "promoted")
    before = [d for d in promoted if parse_ts(d["event_ts"]) < promote_at]
    assert before == [d for d in base if parse_ts(d["event_ts"]) < promote_at], "nothing changes before the promotion"
    after = [d for d in promoted if parse_ts(d["event_ts"]) >= promote_at]
    old_versions = {d["model_version"] for d in base if parse_ts(d["event_ts"]) < promote_at}
    assert after and all(d["model_version"] not in old_versions for d in after), "a promoted model is a new version"
    assert after != [d for d in base if parse_ts(d["event_ts"]) >= promote_at]


def test_the_stream_processor_and_a_restored_shard_keep_the_challenge(portfolio: list[dict], tmp_path: pathlib.Path) -> None:
    events = with_commands(portfolio, command("2025-02-01T00:00:00Z", "challenge", "logistic"),
                           command("2025-04-15T00:00:00Z", "promote"))
    want, _ = decisions(tmp_path, events, "log")
    ports, _ = run_stream(events, 3, portfolio=True)
    assert sorted(ports.decisions) == sorted(dumps(d) for d in want)
    evs = sorted((decode(dumps(e)) for e in with_commands(portfolio, command("2025-02-01T00:00:00Z", "challenge", "batch"))),
                 key=lambda e: event_order(e.ts, e.type, 0))
    half = len(evs) // 2
    # The portfolio's trainer saved mid-challenge (as its model records carry it, without what is pending, which
    # a restarted trainer reads again) and restored goes on exactly as the one that was not.
    engine = Engine(1, portfolio=True)
    for e in evs[:half]:
        engine.process(e)
    assert engine.portfolio is not None and engine.portfolio.challenger is not None
    twin = Engine(1, portfolio=True)
    twin.monitors[0] = Monitor.restore(engine.monitors[0].dumps())
    twin.states = copy.deepcopy(engine.states)
    restored = twin.portfolio = pickle.loads(pickle.dumps(engine.portfolio))
    assert not restored.pending
    for r in engine.portfolio.pending:
        restored.offer(r) if isinstance(r, Revealed) else restored.command(r)
    twin._adopt()
    for e in evs[half:]:
        assert [r.decisions for r in engine.process(e)] == [r.decisions for r in twin.process(e)]
    assert engine.portfolio.challenge_auc() == restored.challenge_auc() and restored.challenge_auc()[2] > 0
    # A shard that learns its own model (RISKMON_MODEL_SCOPE=partition), saved mid-challenge and restored, likewise.
    engine = Engine(1, portfolio=False)
    for e in evs[:half]:
        engine.process(e)
    m = engine.monitors[0]
    assert m.challenger is not None
    twin = Engine(1, portfolio=False)
    twin.monitors[0] = Monitor.restore(m.dumps())
    twin.states = copy.deepcopy(engine.states)  # its own: an engine steps the states it holds in place
    for e in evs[half:]:
        assert [r.decisions for r in engine.process(e)] == [r.decisions for r in twin.process(e)]
    assert engine.monitors[0].challenge_auc() == twin.monitors[0].challenge_auc()
    # Saved as the stream saves it: the comparison travels with the rolling AUC, the challenger with the shard.
    m = engine.monitors[0]
    split = Monitor.restore(m.dumps(with_quality=False), m.dumps_quality())
    assert split.challenge_auc() == m.challenge_auc() and split.challenger is not None
    assert split.challenger.predict_proba_one({"utilisation": 0.9}) == m.challenger.predict_proba_one({"utilisation": 0.9})


def test_metrics_and_the_report_show_both_models(portfolio: list[dict], tmp_path: pathlib.Path) -> None:
    events = with_commands(portfolio, command("2025-02-01T00:00:00Z", "challenge", "batch"))
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    ports, proc = run_stream(events, 1, metrics=metrics, portfolio=True)
    metrics.watch(proc, lag=lambda: [], owned=lambda: P)
    m = samples(registry)
    got = {(r[0]["partition"], r[0]["model"]): r[1] for r in m["riskmon_challenge_auc"]}
    trainer = ports.book.latest() if ports.book is not None else None  # the portfolio's, as last published
    assert trainer is not None
    for p in proc.shards:
        champion, challenger, n = trainer.challenge_auc()  # every partition shows the portfolio's one comparison
        assert got[(str(p), "champion")] == champion and got[(str(p), "challenger")] == challenger
        assert ({r[0]["partition"]: r[1] for r in m["riskmon_challenge_outcomes"]})[str(p)] == n > 0
    log = tmp_path / "ev.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    collector = ReportCollector()
    summary = replay(log, io.BytesIO(), collector=collector, portfolio=True)
    page = render_html(collector, summary, "ev.jsonl")
    champion, challenger, n = summary.challenge
    section = page[page.index("<h2>Champion and challenger</h2>"):]
    assert f"{n:,} outcomes" in section and f"<td>{champion:.3f}</td>" in section and f"<td>{challenger:.3f}</td>" in section


@pytest.mark.parametrize("body,words", [
    ({"command": "challenge"}, "a challenge needs field 'learner'"),
    ({"command": "challenge", "learner": "forest"}, "a challenge needs field 'learner'"),
    ({"command": "promote", "learner": "batch"}, "field 'learner' belongs to a challenge, not a promote"),
    ({"command": "crown"}, "field 'command' must be 'challenge', 'promote', 'drop'"),
])
def test_a_bad_model_command_is_refused_with_its_reason(body: dict, words: str) -> None:
    with pytest.raises(Rejected, match=words):
        decode(orjson.dumps({"type": "model_command", "event_id": "m1", "ts": "2025-01-01T00:00:00Z", **body}))


def test_a_command_applies_once_and_promoting_nothing_changes_nothing() -> None:
    m = Monitor()
    promote = decode(dumps(command("2025-01-01T00:00:00Z", "promote")))
    model = m.model
    assert m.model_command(promote) is False and m.model is model and m.checkpoints == 0  # type: ignore[arg-type]
    challenge = decode(dumps(command("2025-01-02T00:00:00Z", "challenge", "tree", eid="c1")))
    assert m.model_command(challenge) is True and m.challenger is not None  # type: ignore[arg-type]
    first = m.challenger
    assert m.model_command(challenge) is False and m.challenger is first  # type: ignore[arg-type]  # resent: applied once
