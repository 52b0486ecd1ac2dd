"""The UCI loader: hand-checked events, and no event carries a later month's information."""
from __future__ import annotations

import csv
import pathlib
import random

import pytest

from riskmon.models.codec import decode, dumps
from riskmon.models.uci import DEFAULT_COLUMN, MONTHS, client_events, load_rows

DATA = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "uci-credit-default" / "default_of_credit_card_clients.csv"
pytestmark = pytest.mark.skipif(not DATA.is_file(), reason=f"UCI data not at {DATA}")


@pytest.fixture(scope="module")
def rows() -> list[dict[str, int]]:
    return load_rows(DATA)


def _brief(events: list[dict]) -> list[tuple]:
    out = []
    for e in events:
        value = e.get("amount", e.get("days_past_due", e.get("limit")))
        out.append((e["type"], e["ts"][:10], value))
    return out


def test_client_1_by_hand(rows: list[dict[str, int]]) -> None:
    # ID 1: limit 20,000; status Apr..Sep -2,-2,-1,-1,2,2; bills 0,0,0,689,3102,3913;
    # paid 0,0,0,0,689,0; defaulted in October.
    assert _brief(client_events(rows[0])) == [
        ("account_opened", "2005-04-01", 20000),
        ("dpd_report", "2005-04-30", 0),
        ("dpd_report", "2005-05-31", 0),
        ("dpd_report", "2005-06-30", 0),
        ("purchase", "2005-07-29", 689),
        ("dpd_report", "2005-07-31", 0),
        ("purchase", "2005-08-29", 3102),  # 3102 - 689 + 689 paid
        ("payment", "2005-08-30", 689),
        ("dpd_report", "2005-08-31", 60),  # two months late
        ("purchase", "2005-09-28", 811),
        ("dpd_report", "2005-09-30", 60),
        ("instalment_due", "2005-09-30", 3913),
        ("dpd_report", "2005-11-26", 30),  # the outcome: defaulted
    ]


def test_client_2_by_hand_in_a_later_cohort(rows: list[dict[str, int]]) -> None:
    # ID 2 is in cohort 1: its calendar starts in May. Bills 3261,3455,3272,2682,1725,2682 (Apr..Sep);
    # paid 2000 in its first month, so it spent 3261 + 2000.
    events = client_events(rows[1])
    assert events[0]["ts"][:10] == "2005-05-01"
    assert _brief(events)[1] == ("purchase", "2005-05-29", 5261)
    assert _brief(events)[-2:] == [("instalment_due", "2005-10-31", 2682), ("dpd_report", "2005-12-27", 30)]


def _perturb_after(row: dict[str, int], month: int, rng: random.Random) -> dict[str, int]:
    """The row with every column of months after ``month``, and the outcome, changed."""
    out = dict(row)
    for status, bill, paid in MONTHS[month + 1:]:
        out[status] = rng.choice([-2, -1, 0, 1, 2, 3, 8])
        out[bill] = rng.randrange(-5000, 500_000)
        out[paid] = rng.randrange(0, 100_000)
    out[DEFAULT_COLUMN] = 1 - row[DEFAULT_COLUMN]
    return out


def test_no_event_carries_information_from_a_later_month(rows: list[dict[str, int]]) -> None:
    rng = random.Random(5)
    for row in rng.sample(rows, 200):
        base = client_events(row)
        for month in range(len(MONTHS)):
            month_end = [e for e in base if e["type"] == "dpd_report"][month]["ts"]
            changed = client_events(_perturb_after(row, month, rng))
            before = [e for e in base if e["ts"] <= month_end]
            assert [e for e in changed if e["ts"] <= month_end] == before, (row["ID"], month)
        # The default flag reaches the outcome report alone.
        flipped = client_events({**row, DEFAULT_COLUMN: 1 - row[DEFAULT_COLUMN]})
        assert flipped[:-1] == base[:-1] and flipped[-1] != base[-1]


def test_every_client_becomes_valid_events(rows: list[dict[str, int]]) -> None:
    for row in rows[:2000]:
        for e in client_events(row):
            decode(dumps(e))


def _csv(rows: list[dict[str, int]], path: pathlib.Path) -> pathlib.Path:
    """``rows`` written as a UCI CSV (the columns of the real file) at ``path``."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_evaluation_runs_and_prints_its_table(rows: list[dict[str, int]], tmp_path: pathlib.Path) -> None:
    from riskmon.streams.tools.evaluate_uci import evaluate_uci, format_result

    small = _csv(rows[:4000], tmp_path / "uci.csv")
    r = evaluate_uci(small, cohorts=6, test_cohorts=2)
    text = format_result(r)
    assert r.clients == 4000 and "offline gradient boosting on UCI columns" in text
    for name, auc in r.auc.items():
        assert auc["test"] is not None and 0.6 < auc["test"] < 0.9, (name, auc)
    assert len(r.calibration) == 10 and 0 < r.ews["warned_before_default"] <= 1
    # A lender with history scores new clients better than one starting from nothing.
    assert r.warm_start["trained_outcomes"] > 2000
    assert r.warm_start["warm"] > r.warm_start["cold"] + 0.01, r.warm_start
    assert "warm start: the test cohorts' clients alone" in text


def test_evaluate_uci_judges_the_policy_it_is_given(rows: list[dict[str, int]], tmp_path: pathlib.Path) -> None:
    """`riskmon evaluate uci --policy P` judges P (it once judged the shipped policy whatever was named)."""
    import json

    from riskmon.models.policy import default_policy
    from riskmon.streams.cli import main

    small = _csv(rows[:1500], tmp_path / "uci.csv")
    shipped = default_policy()
    # A policy that closes nothing: no closure may come from the score or from days past due (keys it does
    # not name keep the shipped values).
    lenient = tmp_path / "lenient.toml"
    lenient.write_text('version = "never-close"\n[dpd]\nclose = 100000\n[score]\nclose = 1.0\n')
    figures = {}
    for name, extra in (("shipped", []), ("lenient", ["--policy", str(lenient)])):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "uci", "--data", str(small), "--cohorts", "6", "--test-cohorts", "2", "--folds", "2",
                     "--json", str(out), *extra]) == 0
        figures[name] = json.loads(out.read_text())
    assert figures["shipped"]["policy_version"] == f"{shipped.version}+no-breaker"
    assert figures["lenient"]["policy_version"] == "never-close+no-breaker"
    assert figures["shipped"]["ews"]["closures"] > 0
    assert figures["lenient"]["ews"]["closures"] == 0
    # The model is the same: only what the policy does with its scores differs.
    assert figures["lenient"]["auc"] == figures["shipped"]["auc"]
