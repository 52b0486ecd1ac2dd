"""`riskmon evaluate LOG`: any labelled log, judged strictly before each outcome."""
from __future__ import annotations

import pathlib

import orjson
import pytest

from riskmon.models.codec import dumps, format_ts
from riskmon.models.simulate import simulate
from riskmon.models.uci import DEFAULT_COLUMN, load_rows, uci_events
from riskmon.streams.cli import main
from riskmon.streams.replay import replay
from riskmon.streams.tools.evaluate import evaluate_log
from riskmon.streams.tools.evaluate_uci import DEFAULT_DATA

from .helpers import at


def _write(path: pathlib.Path, events: list[dict]) -> pathlib.Path:
    path.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    return path


def test_a_simulated_log_with_its_truth(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    events, truth = simulate(600, 100, seed=11)
    log = _write(tmp_path / "ev.jsonl", events)
    (tmp_path / "ev.truth.jsonl").write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in truth))
    r = evaluate_log(log, truth, folds=3)
    assert r.accounts == 600 and r.bad_accounts == sum(t["defaults"] for t in truth)
    # Graded: the statements whose performance window (due date + 30 days) closed within the 100 days,
    # the early ones, most scored by the scorecard before the learned model took over.
    assert r.prequential_auc is not None and r.prequential_auc > 0.65
    assert r.account_auc is not None and r.account_auc > 0.85
    assert r.warned_bad > 2 * r.warned_good
    assert set(r.offline) == {"logistic regression", "gradient boosting"} and all(v and v > 0.7 for v in r.offline.values())
    assert main(["evaluate", str(log), "--truth", str(tmp_path / "ev.truth.jsonl"), "--folds", "3",
                 "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "offline gradient boosting on the monitor's features (3-fold CV)" in out
    assert orjson.loads((tmp_path / "r.json").read_bytes())["accounts"] == 600


def test_a_uci_log_is_labelled_by_its_own_outcome_reports(tmp_path: pathlib.Path) -> None:
    if not DEFAULT_DATA.is_file():
        pytest.skip("the UCI data is not beside the checkout")
    rows = load_rows(DEFAULT_DATA)[:1500]
    log = _write(tmp_path / "uci.jsonl", list(uci_events(rows)))
    r = evaluate_log(log, folds=3)
    assert r.statements == r.accounts == 1500
    assert r.bad_statements == r.bad_accounts == sum(row[DEFAULT_COLUMN] for row in rows)
    assert r.offline["logistic regression"] is not None and r.offline["logistic regression"] > 0.65


def _silent_default(aid: str = "Q1") -> list[dict]:
    """An account that says nothing between its statement and the report that it is 30 days past due."""
    due = format_ts(at(20))[:10]
    return [
        {"type": "account_opened", "event_id": f"{aid}-1", "account_id": aid, "ts": format_ts(at(0)), "limit": 5000,
         "currency": "CNY"},
        {"type": "purchase", "event_id": f"{aid}-2", "account_id": aid, "ts": format_ts(at(1)), "amount": 900,
         "currency": "CNY", "channel": "app"},
        {"type": "instalment_due", "event_id": f"{aid}-3", "account_id": aid, "ts": format_ts(at(2)),
         "instalment_id": "S1", "amount": 900, "currency": "CNY", "due_date": due},
        {"type": "dpd_report", "event_id": f"{aid}-4", "account_id": aid, "ts": format_ts(at(51)), "days_past_due": 30},
    ]


def test_the_outcome_event_is_never_its_own_warning(tmp_path: pathlib.Path) -> None:
    """`replay --truth` once printed 'closed: 96.7% of defaulters', all from the outcome report itself."""
    log = _write(tmp_path / "q.jsonl", _silent_default())
    r = evaluate_log(log, folds=0)
    assert r.bad_accounts == 1 and r.warned_bad == 0.0 and r.lead_days is None
    out = tmp_path / "d.jsonl"
    with open(out, "wb") as f:
        summary = replay(log, f, truth=[{"account_id": "Q1", "defaults": True, "default_ts": None}])
    assert [d["action"] for d in map(orjson.loads, out.read_bytes().splitlines())] == ["limit_reduction"], \
        "the report does act (at the outcome)"
    assert summary.evaluation is not None and summary.evaluation.warning_rate_defaulters == 0.0
