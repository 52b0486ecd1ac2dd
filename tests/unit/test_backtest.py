"""`riskmon backtest`: each policy's replay side by side, judged against the outcomes, and where they differ."""
from __future__ import annotations

import io
import pathlib
from collections import Counter
from html.parser import HTMLParser

import orjson
import pytest

from riskmon.models.codec import dumps
from riskmon.models.policy import default_policy
from riskmon.models.simulate import simulate
from riskmon.streams.cli import main
from riskmon.streams.replay import load_truth, replay
from riskmon.streams.tools.backtest import backtest, count_differences, differences, render_backtest_html

POLICY = pathlib.Path(__file__).resolve().parents[2] / "models" / "data" / "default_policy.toml"


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    tmp = tmp_path_factory.mktemp("backtest")
    events, truth = simulate(400, 120, seed=3)
    path = tmp / "ev.jsonl"
    path.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    (tmp / "ev.truth.jsonl").write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in truth))
    return path, tmp / "ev.truth.jsonl"


def test_each_policy_is_judged_as_its_own_replay(log: tuple[pathlib.Path, pathlib.Path]) -> None:
    path, truth_path = log
    truth = load_truth(truth_path)
    harsh = default_policy().updated({"dpd.limit": 10, "dpd.freeze": 20, "dpd.close": 25, "score.close_min_dpd": 1},
                                     "harsh-1")
    runs = backtest(path, [("live", None), ("harsh", harsh)], truth)
    for run, policy in zip(runs, (None, harsh)):
        out = io.BytesIO()
        replay(path, out, policy=policy)
        assert run.decisions == Counter(orjson.loads(d)["action"] for d in out.getvalue().splitlines())
    live, hard = runs
    bad = sum(t["defaults"] for t in truth)
    assert live.accounts == hard.accounts == len(truth) and live.bad == hard.bad == bad
    # Closing at 25 days past due closes accounts before their outcome (30 days): true and false closures.
    assert hard.closed_bad > live.closed_bad and hard.closed_good >= live.closed_good
    closed = hard.closed_bad + hard.closed_good
    assert hard.closure_precision == hard.closed_bad / closed and hard.closure_recall == hard.closed_bad / bad
    assert hard.false_closure_rate == hard.closed_good / (len(truth) - bad)
    assert hard.ever["closed"] >= closed and hard.ever["watch"] >= hard.ever["frozen"] >= hard.ever["closed"]
    # Where they differ: each account listed ends in another state, with both last decisions' reasons.
    diff = differences(runs, 1000)
    assert len(diff) == count_differences(runs) > 0
    for aid, ((s0, why0), (s1, why1)) in diff:
        assert s0 != s1 and (why0 or why1)


def test_cli_prints_the_table_and_writes_the_html(log: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path, truth = log
    harsh = tmp_path / "harsh.toml"
    harsh.write_text('version = "harsh-1"\n[dpd]\nlimit = 10\nfreeze = 20\nclose = 25\n')  # the rest: shipped
    page = tmp_path / "bt.html"
    assert main(["backtest", str(path), "--policy", str(POLICY), "--policy", str(harsh), "--truth", str(truth),
                 "--html", str(page)]) == 0
    out = capsys.readouterr().out
    for label in ("closure precision", "false-closure rate (of good accounts)", "median lead, first warning to outcome",
                  "accounts reopened", "decisions: closure", "accounts whose final state differs from"):
        assert label in out
    assert "default_policy (default-2026.1)" in out and "harsh (harsh-1)" in out
    text = page.read_text()
    HTMLParser().feed(text)
    assert text.startswith("<!doctype html>") and "closure precision" in text and "<script" not in text
    # No policy named: the live default alone, no differences section.
    assert main(["backtest", str(path)]) == 0
    assert "accounts whose final state differs" not in capsys.readouterr().out


def test_a_held_closure_leaves_the_account_where_it_was(log: tuple[pathlib.Path, pathlib.Path],
                                                         tmp_path: pathlib.Path) -> None:
    """A push that closes every late line trips the breaker: held accounts end in their own state, not 'closed'."""
    path, _ = log
    push = {"type": "policy_update", "event_id": "push-oops", "ts": "2025-03-01T00:00:00Z", "policy_version": "oops-1",
            "thresholds": {"dpd.watch": 1, "dpd.limit": 1, "dpd.freeze": 1, "dpd.close": 1, "breaker.min_count": 3}}
    pushed = tmp_path / "pushed.jsonl"
    pushed.write_bytes(path.read_bytes() + dumps(push) + b"\n")
    (run,) = backtest(pushed, [("live", None)])
    out = io.BytesIO()
    replay(pushed, out)
    last: dict[str, dict] = {}
    for line in out.getvalue().splitlines():
        d = orjson.loads(line)
        last[d["account_id"]] = d
    held = [a for a, d in last.items() if d["action"] == "held"]
    assert held, "the push trips the breaker"
    for a in held:
        assert run.final[a][0] == last[a]["previous_state"] != "closed"


def test_the_candidate_policies_in_docs_load_and_differ_from_the_shipped_one_only_where_the_readme_says() -> None:
    """docs/policies/ holds the README's trade-off table's candidates: each must stay a valid policy."""
    import tomllib

    from riskmon.models.policy import load_policy

    shipped = tomllib.loads(POLICY.read_text())
    changed = {}
    for path in sorted((POLICY.parents[2] / "docs" / "policies").glob("*.toml")):
        load_policy(path)  # raises on anything a worker would refuse
        doc = tomllib.loads(path.read_text())
        changed[path.stem] = sorted(f"{sec}.{k}" for sec, body in doc.items() if isinstance(body, dict)
                                    for k, v in body.items() if shipped[sec][k] != v)
    assert changed == {
        "close_late": ["dpd.close", "score.close_min_dpd"],
        "no_utilisation_warning": ["utilisation.watch", "utilisation.watch_exit"],
        "previous_default": ["dpd.close", "score.close_min_dpd"],
    }
