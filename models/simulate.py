"""Synthetic event logs with personas whose fate is known only to a truth file.

Personas (share of accounts):
- steady (45%): spends within the limit, pays each statement in full on time;
- high_utiliser (10%): runs near the limit but pays on time (a hard negative);
- spree (5%): one holiday burst of purchases to near the limit, then pays on time
  (looks like a bust-out for a day: the line is frozen and must reopen);
- one_off_late (12%): one statement paid 3-25 days late, otherwise on time;
- recovery (10%): falls 30-70 days behind, then clears the arrears and pays on time;
- slow_deterioration (10%): spending creeps up, payments shrink, then stop: defaults;
- bust_out (7%): quiet, then many drawdowns and limit requests within hours to the
  limit, then never pays: defaults;
- tight_budget (5%): income barely covers spending, the current account dips
  below zero now and then, but every statement is paid (a hard negative);
- income_loss (5%): the salary stops; spending goes on, the current account runs
  down into overdraft, then the line's repayments stop: defaults;
- overdraft (4%): spending outgrows income month by month, the current account
  lives overdrawn and pays sanction interest, repayments shrink, then stop:
  defaults.

Half the accounts (all of the last three personas) have a current account linked to the
line: a monthly salary, card spending, household bills, a monthly fee,
sanction interest on an overdrawn month-end balance, and the line's
repayments paid from it, each event with the running balance. The last two
personas' balance trajectory foretells their default before the line shows it.

Statements fall monthly on the account's bill day with the whole balance due 20
days later (Huabei-style); the servicing ledger reports days past due daily for
accounts in arrears. Deterministic for a given seed.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .codec import format_ts, parse_ts
from .units import DAY_MS, HOUR_MS

__all__ = ["PERSONAS", "DEFAULTING", "simulate"]

PERSONAS = {
    "steady": 0.36,
    "high_utiliser": 0.09,
    "spree": 0.05,
    "one_off_late": 0.11,
    "recovery": 0.09,
    "slow_deterioration": 0.09,
    "bust_out": 0.07,
    "tight_budget": 0.05,
    "income_loss": 0.05,
    "overdraft": 0.04,
}
DEFAULTING = frozenset({"slow_deterioration", "bust_out", "income_loss", "overdraft"})
CASH_PERSONAS = frozenset({"tight_budget", "income_loss", "overdraft"})  # always with a current account

_LIMITS = (200_000, 500_000, 1_000_000, 2_000_000, 5_000_000)  # minor units


@dataclass
class _Account:
    aid: str
    persona: str
    limit: int
    bill_day: int
    rng: random.Random
    bal: int = 0
    unpaid: list[list[int]] = field(default_factory=list)  # [due_ts, remaining]
    seq: int = 0
    statements: int = 0
    late_statement: int = -1
    trouble_month: int = 0
    event_day: int = -1
    default_ts: int | None = None
    pending: list[tuple[int, int]] = field(default_factory=list)  # (pay_ts, amount)
    cash: bool = False  # a linked current account
    cb: int = 0  # its balance (minor units)
    salary: int = 0
    salary_day: int = 0


def _money(minor: int) -> float:
    return minor / 100


def simulate(accounts: int, days: int, seed: int, start: str = "2025-01-01T00:00:00Z",
             prefix: str = "A", on_day: Callable[[int], None] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return (events sorted by event time, truth per account). Account ids are ``prefix`` and a
    7-digit number: give two logs meant for one broker different prefixes. ``on_day(n)`` is told
    each simulated day done (a progress line)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,39}", prefix):
        raise ValueError(f"an account id prefix is 1-40 ASCII letters, digits or ._:- (got {prefix[:40]!r})")
    t0 = parse_ts(start)
    master = random.Random(seed)
    names = list(PERSONAS)
    weights = list(PERSONAS.values())
    accs: list[_Account] = []
    events: list[tuple[int, int, int, dict[str, Any]]] = []
    for i in range(accounts):
        a = _Account(
            aid=f"{prefix}{i:07d}", persona=master.choices(names, weights)[0], limit=master.choice(_LIMITS),
            bill_day=master.randrange(1, 29), rng=random.Random(master.getrandbits(64)),
        )
        a.late_statement = a.rng.randrange(0, 3)
        a.trouble_month = a.rng.randrange(0, 2)
        a.event_day = a.rng.randrange(5, min(60, max(6, days - 20))) if a.persona in ("spree", "bust_out") else -1
        a.cash = a.persona in CASH_PERSONAS or a.rng.random() < 0.5
        a.salary = int(a.limit * a.rng.uniform(0.4, 1.2)) // 100 * 100
        a.salary_day = a.rng.randrange(0, 28)
        a.cb = int(a.salary * a.rng.uniform(0.2, 1.5)) if a.persona not in CASH_PERSONAS else int(a.salary * 0.3)
        accs.append(a)
        opened = t0 + a.rng.randrange(0, 6 * HOUR_MS)
        _emit(events, i, a, opened, {
            "type": "account_opened", "limit": _money(a.limit), "currency": "CNY",
            "attributes": {"age": a.rng.randrange(20, 65), "channel": a.rng.choice(["app", "partner", "web"])},
        })
    for day in range(days):
        day_ts = t0 + day * DAY_MS
        for i, a in enumerate(accs):
            _day(events, i, a, day, day_ts)
        if on_day is not None:
            on_day(day + 1)
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    truth = [
        {"account_id": a.aid, "persona": a.persona, "defaults": a.persona in DEFAULTING,
         "default_ts": None if a.default_ts is None else format_ts(a.default_ts)}
        for a in accs
    ]
    return [e[3] for e in events], truth


def _emit(events: list[tuple[int, int, int, dict[str, Any]]], i: int, a: _Account, ts: int, body: dict[str, Any]) -> None:
    a.seq += 1
    body.update(event_id=f"{a.aid}-{a.seq:05d}", account_id=a.aid, ts=format_ts(ts))
    events.append((ts, i, a.seq, body))


def _spend(events: list[Any], i: int, a: _Account, ts: int, amount: int, kind: str = "purchase") -> None:
    amount = min(amount, a.limit - a.bal)
    if amount < 100:
        return
    a.bal += amount
    body: dict[str, Any] = {"type": kind, "amount": _money(amount), "currency": "CNY",
                            "channel": a.rng.choice(["app", "pos", "web"])}
    if kind == "purchase":
        body["merchant"] = f"M{a.rng.randrange(1, 500):04d}"
    _emit(events, i, a, ts, body)


def _cash(events: list[Any], i: int, a: _Account, ts: int, type_: str, kind: str, amount: int) -> None:
    """A movement on the linked current account, with its running balance."""
    if amount < 100:
        return
    a.cb += amount if type_ == "inflow" else -amount
    _emit(events, i, a, ts, {"type": type_, "amount": _money(amount), "currency": "CNY", "kind": kind,
                             "balance": _money(a.cb)})


def _pay(events: list[Any], i: int, a: _Account, ts: int, amount: int) -> None:
    amount = min(amount, a.bal)
    if a.cash and a.persona in ("income_loss", "overdraft"):
        # Repaid from the current account, and only from what is in it.
        amount = min(amount, max(a.cb, 0))
    if amount < 100:
        return
    if a.cash:
        _cash(events, i, a, ts - 60_000, "outflow", "loan_payment", amount)
    a.bal -= amount
    left = amount
    for u in a.unpaid:
        take = min(u[1], left)
        u[1] -= take
        left -= take
    a.unpaid = [u for u in a.unpaid if u[1] >= 100]
    _emit(events, i, a, ts, {"type": "payment", "amount": _money(amount), "currency": "CNY", "channel": "app"})


def _day(events: list[Any], i: int, a: _Account, day: int, day_ts: int) -> None:
    r = a.rng
    p = a.persona
    month = day // 30

    def t() -> int:
        return day_ts + r.randrange(8 * HOUR_MS, 23 * HOUR_MS)

    defaulting = (p == "slow_deterioration" and month >= a.trouble_month + 1) or (p == "bust_out" and day > a.event_day >= 0)

    if a.cash:
        _current_account(events, i, a, day, day_ts, month)

    # Spending.
    if p == "bust_out" and day == a.event_day:
        base = day_ts + r.randrange(9 * HOUR_MS, 20 * HOUR_MS)
        for k in range(r.randrange(2, 5)):
            _emit(events, i, a, base + k * 600_000, {"type": "limit_request", "amount": _money(a.limit), "currency": "CNY", "channel": "app"})
        n = r.randrange(8, 16)
        for k in range(n):
            _spend(events, i, a, base + 1_800_000 + k * r.randrange(120_000, 600_000),
                   int((a.limit - a.bal) / max(1, n - k) * r.uniform(0.9, 1.3)), "drawdown")
    elif p == "spree" and day == a.event_day:
        base = day_ts + r.randrange(10 * HOUR_MS, 18 * HOUR_MS)
        n = r.randrange(6, 10)
        for k in range(n):
            _spend(events, i, a, base + k * r.randrange(300_000, 1_200_000),
                   int((a.limit * 0.97 - a.bal) / max(1, n - k)))
    elif not defaulting or p == "slow_deterioration":
        target = {"high_utiliser": 0.9, "slow_deterioration": min(0.55 + 0.15 * day / 30, 1.0)}.get(p, 0.45)
        rate = {"high_utiliser": 0.8, "slow_deterioration": 0.9}.get(p, 0.5)
        if p == "bust_out":
            rate = 0.2
        if r.random() < rate and a.bal < a.limit * target:
            _spend(events, i, a, t(), int(a.limit * r.uniform(0.01, 0.06)))
        if r.random() < 0.02 and p not in ("bust_out",):
            _spend(events, i, a, t(), int(a.limit * r.uniform(0.02, 0.1)), "drawdown")
    # Limit requests: good customers ask now and then too (more so when near the limit).
    ask = {"high_utiliser": 0.02, "slow_deterioration": 0.04 if month >= a.trouble_month else 0.005}.get(p, 0.004)
    if r.random() < ask:
        _emit(events, i, a, t(), {"type": "limit_request", "amount": _money(a.limit // 2), "currency": "CNY", "channel": "app"})

    # Scheduled payments.
    due_pay = [x for x in a.pending if x[0] < day_ts + DAY_MS]
    a.pending = [x for x in a.pending if x[0] >= day_ts + DAY_MS]
    for pay_ts, amount in due_pay:
        _pay(events, i, a, pay_ts, amount)

    # Statement on the bill day: the whole balance falls due 20 days later.
    if day % 30 == a.bill_day % 30 and day > 0 and a.bal >= 100:
        st_ts = day_ts + 1 * HOUR_MS
        due_ts = day_ts + 20 * DAY_MS
        amount = a.bal - sum(u[1] for u in a.unpaid)
        if amount >= 100:
            a.statements += 1
            iid = f"{a.aid}-S{a.statements:02d}"
            _emit(events, i, a, st_ts, {"type": "instalment_due", "instalment_id": iid, "amount": _money(amount),
                                        "currency": "CNY", "due_date": format_ts(due_ts)[:10]})
            a.unpaid.append([due_ts + DAY_MS, amount])
            _plan_payment(a, day, day_ts, amount, month)

    # The servicing ledger ages accounts in arrears once a day.
    if a.unpaid and a.unpaid[0][0] <= day_ts:
        dpd = (day_ts - a.unpaid[0][0]) // DAY_MS + 1
        if dpd >= 90 and a.default_ts is None:
            a.default_ts = day_ts
        _emit(events, i, a, day_ts + 2 * HOUR_MS, {"type": "dpd_report", "days_past_due": dpd})


def _current_account(events: list[Any], i: int, a: _Account, day: int, day_ts: int, month: int) -> None:
    """A day on the linked current account: income, spending, bills, the bank's charges."""
    r, p = a.rng, a.persona
    lost = p == "income_loss" and month >= a.trouble_month + 1
    if day % 30 == a.salary_day and not lost:
        _cash(events, i, a, day_ts + 7 * HOUR_MS, "inflow", "salary", a.salary)
    # What a month's spending comes to, as a share of the salary.
    burn = {"tight_budget": 0.97, "overdraft": 1.05 + 0.2 * month, "income_loss": 0.9}.get(p, 0.6)
    if r.random() < 0.12:
        _cash(events, i, a, day_ts + r.randrange(9 * HOUR_MS, 22 * HOUR_MS), "outflow", "card",
              int(a.salary * burn * 0.75 / 3.6 * r.uniform(0.6, 1.4)))
    if day % 30 == (a.salary_day + 3) % 30:
        _cash(events, i, a, day_ts + 10 * HOUR_MS, "outflow", "household", int(a.salary * burn * 0.25))
    if day % 30 == 29:
        _cash(events, i, a, day_ts + 23 * HOUR_MS, "charge", "fee", 500)
        if a.cb < 0:  # sanction interest on the overdrawn month-end balance
            _cash(events, i, a, day_ts + 23 * HOUR_MS + 60_000, "charge", "penalty_interest", max(100, -a.cb // 50))


def _plan_payment(a: _Account, day: int, day_ts: int, amount: int, month: int) -> None:
    r = a.rng
    p = a.persona
    on_time = day_ts + r.randrange(2, 19) * DAY_MS + r.randrange(8 * HOUR_MS, 22 * HOUR_MS)
    if p == "bust_out" and day >= a.event_day - 1:
        return  # from the eve of the burst on, never pays again
    if p == "slow_deterioration" and month >= a.trouble_month:
        share = max(0.0, 0.7 - 0.35 * (month - a.trouble_month))
        if share > 0:
            a.pending.append((on_time, int(amount * share)))
        return
    if p == "one_off_late" and a.statements - 1 == a.late_statement:
        a.pending.append((on_time + r.randrange(15, 40) * DAY_MS, amount))
        return
    if p == "recovery" and a.statements - 1 == a.trouble_month:
        # Nothing now; 30-70 days after the due date the arrears are cleared,
        # and later statements are paid on time again.
        clear_ts = day_ts + (20 + r.randrange(30, 70)) * DAY_MS + 10 * HOUR_MS
        a.pending.append((clear_ts, amount))
        return
    a.pending.append((on_time, amount))


