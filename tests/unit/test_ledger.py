"""Arrears as a ledger states them, the linked current account, and what a real feed sends (issue: a real feed)."""
from __future__ import annotations

import random

import pytest

from riskmon.models.codec import decode
from riskmon.models.errors import Rejected
from riskmon.models.features import features
from riskmon.models.state import I_ID
from riskmon.models.step import Context, step
from riskmon.models.policy import default_policy

from .helpers import Account, FixedScore, at, ev


def test_a_ledger_report_of_nothing_past_due_is_not_a_payment_of_nothing() -> None:
    """Three events used to give `warning ... LOW_PAYMENT_RATIO: paid 0% of what fell due` for an account that owed nothing."""
    a = Account(limit=10_000)
    a.statement(0, 500)
    a.tick(25, dpd=0)  # the ledger: current, after the due date (paid through a channel we do not see)
    assert a.status == "normal" and "LOW_PAYMENT_RATIO" not in a.codes()
    x = features(a.state)
    assert x["payment_to_due"] == 1.0 and x["on_time_share"] == 1.0


def test_reported_days_past_due_stop_ageing_once_the_arrears_are_paid() -> None:
    """A 5-day report, then full payment the next day, used to read 36 days past due a month later (a limit cut)."""
    a = Account(limit=10_000)
    a.statement(0, 500)  # due day 20
    a.statement(15, 300)  # next statement, not yet due while the first is late
    a.tick(25, dpd=5)
    assert a.state["dpd"] == 5
    a.pay(26, 500)
    a.tick(56)
    assert a.state["dpd"] == 21  # the second statement (due day 35), unpaid, is the only arrear now
    a.pay(57, 300)
    a.tick(90)
    assert a.state["dpd"] == 0 and a.status in ("normal", "watch")
    assert "limit_reduction" not in a.actions()


def test_a_payment_that_names_its_instalment_pays_that_one_first() -> None:
    a = Account(limit=10_000)
    a.statement(0, 400, iid="S-A")
    a.statement(1, 600, iid="S-B")
    a.apply(ev("payment", at(2), amount=600, currency="CNY", channel="app", instalment_id="S-B"))
    assert [i[I_ID] for i in a.state["inst"]] == ["S-A"]


def test_an_immaterial_remainder_settles_and_a_material_one_ages() -> None:
    a = Account(limit=100_000)
    a.statement(0, 10_000)
    a.pay(10, 9_600)  # 4% short: the ledger would not chase it
    assert a.state["inst"] == []
    b = Account(limit=100_000)
    b.statement(0, 10_000)
    b.pay(10, 8_000)  # 20% short: real arrears
    b.tick(40)
    assert b.state["dpd"] == 20


def test_months_since_on_time_count_from_the_first_due_date_not_from_opening() -> None:
    a = Account(limit=10_000)
    a.tick(300)  # nearly a year with nothing due
    assert features(a.state)["months_since_on_time"] == 0.0
    a.statement(300, 100)  # due day 320, missed
    a.tick(350)
    assert features(a.state)["months_since_on_time"] == pytest.approx(29 / 30)  # from the end of the due date


def test_current_account_history_before_the_line_builds_features_and_the_line_opens_with_them() -> None:
    ctx = Context(default_policy(), FixedScore(0.99), "test.v0", True, 30)
    s = None
    for day in range(0, 120, 30):
        s = step(s, ev("inflow", at(day), account="C1", amount=3000, currency="CZK", kind="salary", balance=500), ctx).state
        s = step(s, ev("charge", at(day + 20), account="C1", amount=15, currency="CZK", kind="penalty_interest",
                       balance=-200), ctx).state
    r = step(s, ev("outflow", at(121), account="C1", amount=100, currency="CZK", kind="card"), ctx)
    assert r.decisions == [] and not r.scored and r.state["line"] == 0  # no line to act on: no decision at score 0.99
    assert r.state["cb"] == -30_000  # no balance on the event: the last known one, less the outflow (minor units)
    opened = step(r.state, ev("account_opened", at(122), account="C1", limit=20000, currency="CZK"), ctx)
    x = features(opened.state)
    assert opened.state["line"] == 1 and opened.state["limit"] == 2_000_000
    assert x["income_months_180d"] > 0.5 and x["penalty_interest_180d"] > 2 and x["days_below_zero_90d"] > 20
    assert x["min_balance_90d"] < 0 and x["linked_account"] == 1.0
    with pytest.raises(Rejected) as again:
        step(opened.state, ev("account_opened", at(123), account="C1", limit=20000, currency="CZK"), ctx)
    assert again.value.reason.value == "account_exists"


def test_the_minimum_balance_counts_the_days_no_event_came() -> None:
    ctx = Context(default_policy(), FixedScore(0.01), "test.v0", True, 30)
    s = step(None, ev("balance_report", at(0), account="C2", balance=-800, currency="EUR"), ctx).state
    s = step(s, ev("inflow", at(40), account="C2", amount=1000, currency="EUR", kind="salary"), ctx).state
    x = features(s)
    assert s["cb"] == 20_000 and x["balance_last"] > 0
    assert x["min_balance_90d"] < 0, "the -800 held for 40 days, with no event in between"
    assert x["days_below_zero_90d"] == pytest.approx(40, rel=0.3)


@pytest.mark.parametrize("raw, reason", [
    (b'{"type":"inflow","event_id":"e1","account_id":"a","ts":"1995-03-01T00:00:00Z","amount":5,"currency":"CZK","kind":"lottery"}', "wrong_type"),
    (b'{"type":"charge","event_id":"e1","account_id":"a","ts":"1995-03-01T00:00:00Z","amount":-5,"currency":"CZK"}', "bad_amount"),
    (b'{"type":"balance_report","event_id":"e1","account_id":"a","ts":"1995-03-01T00:00:00Z","currency":"CZK"}', "missing_field"),
    (b'{"type":"balance_report","event_id":"e1","account_id":"a","ts":"1995-03-01T00:00:00Z","balance":"-5","currency":"CZK"}', "wrong_type"),
    (b'{"type":"outflow","event_id":"e1","account_id":"a","ts":"1995-03-01T00:00:00Z","amount":5,"currency":"XAU"}', "unknown_currency"),
    (b'{"type":"payment","event_id":"e1","account_id":"a","ts":"2025-03-01T00:00:00Z","amount":12.5,"currency":"JPY"}', "bad_amount"),
    (b'{"type":"payment","event_id":"e1","account_id":"a","ts":"1899-12-31T00:00:00Z","amount":12.5,"currency":"CZK"}', "bad_timestamp"),
    (b'{"type":"payment","event_id":"e1","account_id":"a","ts":"2025-03-01T00:00:00Z","amount":1,"currency":"CZK","instalment_id":"bad id"}', "bad_id"),
])
def test_new_fields_are_refused_with_a_typed_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as r:
        decode(raw)
    assert r.value.reason.value == reason


def test_every_iso_currency_with_a_minor_unit_is_accepted_and_a_1960s_history_decodes() -> None:
    for cur, amount in (("CZK", 12.5), ("JPY", 12), ("KWD", 1.25), ("VND", 50000)):
        e = decode(b'{"type":"inflow","event_id":"e1","account_id":"a","ts":"1965-01-05T00:00:00Z","amount":%s,'
                   b'"currency":"%s","kind":"salary"}' % (str(amount).encode(), cur.encode()))
        assert e.currency == cur and e.ts < 0


def test_a_feature_specification_replaces_the_shipped_one_and_is_checked(tmp_path) -> None:
    import io

    from riskmon.models.features import load_spec
    from riskmon.models.simulate import simulate
    from riskmon.models.codec import dumps
    from riskmon.streams.cli import main

    spec_file = tmp_path / "f.toml"
    spec_file.write_text('version = "mine-1"\nbuiltins = ["utilisation", "dpd_months"]\n'
                         '[[aggregate]]\nname = "inflow_60d"\nkind = "sum"\nevents = ["inflow"]\nfield = "amount"\n'
                         'window_days = 60\ntransform = "log1p"\n')
    spec = load_spec(spec_file)
    assert spec.version == "mine-1" and spec.names == ("utilisation", "dpd_months", "inflow_60d")
    events, _ = simulate(200, 60, seed=3)
    log = tmp_path / "ev.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    assert main(["replay", str(log), "--features", str(spec_file), "--out", str(tmp_path / "d.jsonl"), "--quiet"]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "x"\n[[aggregate]]\nname = "a"\nkind = "median"\nevents = ["inflow"]\n')
    with pytest.raises(Rejected) as r:
        load_spec(bad)
    assert r.value.reason.value == "bad_policy" and "kind must be one of" in r.value.detail


def test_a_current_account_takes_no_credit_events_before_its_line_opens() -> None:
    ctx = Context(default_policy(), FixedScore(0.01), "test.v0", True, 30)
    s = step(None, ev("inflow", at(0), account="C3", amount=100, currency="CNY", kind="salary"), ctx).state
    for bad in (ev("dpd_report", at(1), account="C3", days_past_due=90),
                ev("drawdown", at(1), account="C3", amount=500, currency="CNY", channel="app")):
        with pytest.raises(Rejected) as r:
            step(s, bad, ctx)
        assert r.value.reason.value == "unknown_account" and "never opened" in r.value.detail


def test_a_tiny_payment_does_not_clear_arrears_only_the_ledger_knows() -> None:
    a = Account(limit=10_000)
    a.tick(5, dpd=60)  # arrears on obligations this feed never stated
    a.statement(6, 100)  # a new statement, not due yet
    a.pay(7, 0.01)
    assert a.state["dpd"] >= 61


def test_months_since_on_time_do_not_restart_at_each_missed_instalment() -> None:
    a = Account(limit=10_000)
    a.statement(0, 100)  # due day 20, missed
    a.statement(30, 100)  # due day 50, missed
    a.tick(80)
    assert features(a.state)["months_since_on_time"] == pytest.approx(59 / 30)  # from the end of day 20


def test_a_missed_instalment_the_ledger_reports_current_is_late_not_on_time() -> None:
    a = Account(limit=10_000)
    a.statement(0, 100)  # due day 20
    a.tick(25)  # the date passed unpaid
    last_ok = a.state["last_ok"]
    a.tick(30, dpd=0)
    assert a.state["late"] == 1 and a.state["on_time"] == 0 and a.state["last_ok"] == last_ok


def test_time_in_arrears_reads_the_same_however_often_the_ledger_reports() -> None:
    readings = []
    for every in (1, 30, 90):
        a = Account(limit=10_000)
        a.statement(0, 100)  # due day 20, never paid: in arrears from day 21
        a.tick(21, dpd=1)  # the first report, then one every `every` days
        for day in range(21 + every, 400, every):
            a.tick(day, dpd=day - 20)
        a.tick(400, dpd=380)
        readings.append(features(a.state)["days_in_arrears_90d"])
    assert max(readings) - min(readings) < 1.0 and 85 < readings[0] <= 90, readings


def test_a_policy_update_before_1970_stays_in_force() -> None:
    from riskmon.models.monitor import Monitor

    m = Monitor("p0")
    m.control(ev("policy_update", -1_000_000_000_000, policy_version="old-books", thresholds={"dpd.watch": 10}))
    assert m.policy_at(-500_000_000_000).version == "old-books" and m.policy_at(at(0)).version == "old-books"


def test_a_state_saved_before_the_features_is_upgraded_not_dead_lettered() -> None:
    a = Account(limit=10_000)
    a.statement(0, 100)
    old = {k: v for k, v in a.state.items() if k not in ("a", "fs", "cb", "line")}
    r = step(old, ev("payment", at(5), amount=100, currency="CNY", channel="app"), a.ctx())  # type: ignore[arg-type]
    assert r.state["line"] == 1 and r.state["inst"] == [] and len(r.state["a"]) == len(a.state["a"])
    assert "a" not in old


@pytest.mark.parametrize("body, says", [
    ('[[aggregate]]\nname = "x"\nkind = "sum"\nevents = ["inflow"]\nfield = "amount"\ncap = inf\n', "finite"),
    ('[[aggregate]]\nname = "x"\nkind = "max"\nevents = ["dpd_report"]\nfield = "dpd"\n', "time_above"),
    ('[[aggregate]]\nname = "utilisation"\nkind = "count"\nevents = ["inflow"]\n', "built-in"),
    ('aggregate = [1]\n', "list of tables"),
    ('[[aggregate]]\nname = "x"\nkind = "count"\nevents = ["inflow"]\nkinds = [["salary"]]\n', "kinds"),
    ('[[aggregate]]\nname = "x"\nkind = "count"\nevents = ["inflow"]\n[[ratio]]\nname = "r"\nnum = "x"\nden = "x"\ncap = "abc"\n', "finite"),
    ('[[aggregate]]\nname = "x"\nkind = "count"\nevents = ["inflow"]\n[[ratio]]\nname = "r"\nnum = "x"\nden = "x"\nnumerator = 1\n', "unknown keys"),
])
def test_a_feature_specification_that_could_not_run_is_refused_at_load(tmp_path, body: str, says: str) -> None:
    from riskmon.models.features import load_spec

    f = tmp_path / "f.toml"
    f.write_text('version = "v"\nbuiltins = ["utilisation"]\n' + body)
    with pytest.raises(Rejected) as r:
        load_spec(f)
    assert r.value.reason.value == "bad_policy" and says in r.value.detail, r.value.detail


def test_a_breaker_command_settles_a_hold_on_a_state_saved_before_the_features() -> None:
    from riskmon.models.step import resolve_hold

    a = Account(limit=10_000)
    held = dict(a.state, hold=["closed", at(1), "d1"])
    old = {k: v for k, v in held.items() if k not in ("a", "fs", "cb", "line")}
    cmd = ev("breaker_command", at(2), command="drop", action="closure", note="")
    r = resolve_hold(old, cmd, a.ctx())  # type: ignore[arg-type]
    assert [d.action for d in r.decisions] == ["hold_dropped"] and "hold" not in r.state
    assert len(r.state["a"]) == len(a.state["a"]) and "a" not in old


@pytest.mark.parametrize("seed", range(6))
def test_windowed_minimum_and_maximum_read_what_the_history_says(seed: int) -> None:
    """The bucketed min/max (generated code, with a fast path when every bucket is in the window) against
    the history itself: the least balance held at any time in the window, the worst reported dpd in it."""
    from riskmon.models.events import BalanceReport, DpdReport
    from riskmon.models.featurespec import parse_spec
    from riskmon.models.units import DAY_MS

    rng = random.Random(seed)
    spec = parse_spec({"version": "t", "aggregate": [
        {"name": "mn", "kind": "min", "events": ["balance_report"], "field": "balance", "window_days": 30, "buckets": 3},
        {"name": "mx", "kind": "max", "events": ["dpd_report"], "field": "days_past_due", "window_days": 20, "buckets": 4},
    ]}, "test", ())
    agg = spec.new_state()
    levels: list[tuple[int, int]] = []  # (ts, balance from then on)
    reports: list[tuple[int, int]] = []
    now, balance = 10**12, None

    def expect(t: int) -> tuple[float, float]:
        start_mn = (t // (30 * DAY_MS // 3) - 2) * (30 * DAY_MS // 3)
        held = [b for ts, b in levels if ts < start_mn][-1:]  # the level in force as the window opened
        mn = min([*held, *(b for ts, b in levels if ts >= start_mn)], default=0.0)
        start_mx = (t // (20 * DAY_MS // 4) - 3) * (20 * DAY_MS // 4)
        mx = max((d for ts, d in reports if ts >= start_mx), default=0.0)
        return mn, mx

    for i in range(300):
        now += rng.choice([0, rng.randrange(DAY_MS), rng.randrange(15 * DAY_MS), rng.randrange(40 * DAY_MS)])
        if rng.random() < 0.6:
            before, balance = balance, rng.randrange(-5000, 5000)
            spec.observe(agg, BalanceReport("balance_report", f"b{i}", "a", now, balance, "EUR"), now, before, balance, 0, 0)
            if balance != before:
                levels.append((now, balance))
        else:
            dpd = rng.randrange(0, 90)
            spec.observe(agg, DpdReport("dpd_report", f"d{i}", "a", now, dpd), now, balance, balance, 0, 0)
            reports.append((now, dpd))
        for t in (now, now + rng.randrange(50 * DAY_MS)):  # at the event, and later with nothing new
            assert spec.values(agg, t, 1, balance, 0) == list(expect(t)), (i, t - now)
