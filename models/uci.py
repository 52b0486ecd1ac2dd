"""The UCI "default of credit card clients" data as the monitor's own events.

Source: Yeh, I-C. and Lien, C-H. (2009), "The comparisons of data mining
techniques for the predictive accuracy of probability of default of credit card
clients", Expert Systems with Applications 36(2), 2473-2480; UCI Machine
Learning Repository, CC BY 4.0. 30,000 Taiwanese card holders, April to
September 2005, and whether each defaulted on the October 2005 payment.

How a row becomes events (all money in TWD):
- ``account_opened`` on the first day of the client's first month (limit, sex,
  education, marriage, age);
- for each month, April to September, in calendar order: a ``purchase`` two days
  before month end for what the balance grew by (bill - last bill + payment;
  a ``refund`` if it shrank), the month's ``payment`` the day before month end,
  and the repayment status as the servicing ledger's ``dpd_report`` at month end
  (status k >= 1, "k months late", is 30k days past due; -2, -1, 0 are current);
- the September bill as an ``instalment_due`` at September's end, due 25 days
  later: the statement whose outcome the model predicts;
- the outcome, after the last month: the ledger's ``dpd_report`` 31 days after
  that due date, 30 days past due for a client who defaulted, 0 for one who did
  not (which settles the statement as met: see models.step).

Every event of a month is built from that month's columns and earlier ones
only; the default flag reaches nothing but the outcome report. Clients are
spread over ``cohorts`` start months, one month apart (client i in cohort
i mod cohorts), so that outcomes of early cohorts arrive while later ones are
still being scored; each client keeps its own calendar order.
"""
from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = ["MONTHS", "COHORTS", "client_events", "load_rows", "uci_events", "cohort_of", "DEFAULT_COLUMN"]

# (status, bill, payment) columns, April first.
MONTHS = (
    ("PAY_6", "BILL_AMT6", "PAY_AMT6"),
    ("PAY_5", "BILL_AMT5", "PAY_AMT5"),
    ("PAY_4", "BILL_AMT4", "PAY_AMT4"),
    ("PAY_3", "BILL_AMT3", "PAY_AMT3"),
    ("PAY_2", "BILL_AMT2", "PAY_AMT2"),
    ("PAY_0", "BILL_AMT1", "PAY_AMT1"),
)
DEFAULT_COLUMN = "default payment next month"
COHORTS = 12
_DUE_AFTER = timedelta(days=25)
_OUTCOME_AFTER_DUE = timedelta(days=31)


def load_rows(path: str | Path) -> list[dict[str, int]]:
    """The CSV's rows as integers."""
    with open(path, newline="") as f:
        return [{k: int(v) for k, v in row.items()} for row in csv.DictReader(f)]


def cohort_of(row: dict[str, int], cohorts: int = COHORTS) -> int:
    return (row["ID"] - 1) % cohorts


def _month_start(cohort: int, m: int) -> datetime:
    months = 3 + cohort + m  # April 2005 = month index 3 of 2005
    return datetime(2005 + months // 12, months % 12 + 1, 1, tzinfo=timezone.utc)


def _ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def client_events(row: dict[str, int], cohorts: int = COHORTS) -> list[dict[str, Any]]:
    """The events of one client, in calendar order.

    >>> row = {"ID": 1, "LIMIT_BAL": 20000, "SEX": 2, "EDUCATION": 2, "MARRIAGE": 1, "AGE": 24,
    ...        "PAY_0": 2, "PAY_2": 2, "PAY_3": -1, "PAY_4": -1, "PAY_5": -2, "PAY_6": -2,
    ...        "BILL_AMT1": 3913, "BILL_AMT2": 3102, "BILL_AMT3": 689, "BILL_AMT4": 0, "BILL_AMT5": 0,
    ...        "BILL_AMT6": 0, "PAY_AMT1": 0, "PAY_AMT2": 689, "PAY_AMT3": 0, "PAY_AMT4": 0,
    ...        "PAY_AMT5": 0, "PAY_AMT6": 0, "default payment next month": 1}
    >>> [(e["type"], e["ts"][:10]) for e in client_events(row)][-3:]
    [('dpd_report', '2005-09-30'), ('instalment_due', '2005-09-30'), ('dpd_report', '2005-11-26')]
    """
    aid = f"UCI{row['ID']:05d}"
    cohort = cohort_of(row, cohorts)
    seq = 0

    def ev(type_: str, at: datetime, **body: Any) -> dict[str, Any]:
        nonlocal seq
        seq += 1
        return {"type": type_, "event_id": f"{aid}-{seq:02d}", "account_id": aid, "ts": _ts(at), **body}

    out = [ev("account_opened", _month_start(cohort, 0), limit=row["LIMIT_BAL"], currency="TWD",
              attributes={k.lower(): row[k] for k in ("SEX", "EDUCATION", "MARRIAGE", "AGE")})]
    last_bill = 0
    month_end = _month_start(cohort, 0)
    for m, (status, bill_col, paid_col) in enumerate(MONTHS):
        month_end = _month_start(cohort, m + 1) - timedelta(days=1)
        bill, paid = row[bill_col], row[paid_col]
        spent = bill - last_bill + paid
        if spent > 0:
            out.append(ev("purchase", month_end - timedelta(days=2) + timedelta(hours=12), amount=spent,
                          currency="TWD", channel="card"))
        elif spent < 0:
            out.append(ev("refund", month_end - timedelta(days=2) + timedelta(hours=12), amount=-spent,
                          currency="TWD", channel="card"))
        if paid > 0:
            out.append(ev("payment", month_end - timedelta(days=1) + timedelta(hours=12), amount=paid,
                          currency="TWD", channel="bank"))
        out.append(ev("dpd_report", month_end, days_past_due=30 * max(row[status], 0)))
        last_bill = bill
    due = month_end + _DUE_AFTER
    out.append(ev("instalment_due", month_end + timedelta(hours=12), instalment_id=f"{aid}-2005-09",
                  amount=max(row["BILL_AMT1"], 1), currency="TWD", due_date=due.strftime("%Y-%m-%d")))
    outcome = due + timedelta(days=1) + _OUTCOME_AFTER_DUE
    out.append(ev("dpd_report", outcome, days_past_due=30 if row[DEFAULT_COLUMN] else 0))
    return out


def uci_events(rows: Iterable[dict[str, int]], cohorts: int = COHORTS) -> Iterator[dict[str, Any]]:
    for row in rows:
        yield from client_events(row, cohorts)
