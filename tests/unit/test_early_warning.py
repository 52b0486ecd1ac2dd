"""Every trigger of the default policy, escalation, hysteresis, clear and reopen."""
from __future__ import annotations

from riskmon.models.early_warning import fired_rules
from riskmon.models.monitor import Monitor
from riskmon.models.policy import default_policy

from .helpers import Account, at, ev


def test_dpd_buckets_escalate_one_step_at_a_time() -> None:
    a = Account()
    a.draw(0, 100)
    a.statement(1, 100)  # due at the end of day 21
    for day, want in ((21.5, "normal"), (22, "watch"), (51, "watch"), (52, "limit_reduced"),
                      (82, "frozen"), (141, "frozen"), (142, "closed")):
        a.tick(day)
        assert a.status == want, (day, a.state["dpd"])
    assert a.actions() == ["warning", "limit_reduction", "freeze", "closure"]
    assert [d.reasons[0].code for d in a.decisions] == ["DPD_1_30", "DPD_31_60", "DPD_61_90", "DPD_90_PLUS"]
    assert a.decisions[-1].limit_cap == 0


def test_score_levels_and_closure_needs_arrears() -> None:
    a = Account(score=0.4)
    a.draw(0, 10)
    assert a.actions() == ["warning"] and a.codes()[0] == "SCORE_WATCH"
    a.model.score = 0.7
    a.draw(1, 10)
    a.model.score = 0.9
    a.draw(2, 10)
    a.model.score = 0.99
    a.draw(3, 10)
    assert a.actions() == ["warning", "limit_reduction", "freeze"], "no closure on the score alone"
    a.statement(4, 40)
    a.tick(24 + 90)  # 90 days past due: frozen still, a score closure takes 91
    assert a.actions()[-1] == "freeze"
    a.tick(24 + 91)
    assert a.actions()[-1] == "closure" and a.decisions[-1].reasons[0].code == "SCORE_CLOSE"


def test_a_jump_goes_straight_to_the_called_state() -> None:
    a = Account(score=0.9)
    a.draw(0, 10)
    assert [(d.action, d.previous_state, d.new_state) for d in a.decisions] == [("freeze", "normal", "frozen")]


def test_bust_out_freezes() -> None:
    a = Account(limit=10_000)
    for k in range(8):
        a.draw(0, 1_150, hours=k * 0.05)
    assert a.actions() == ["warning", "freeze"]
    assert a.decisions[0].reasons[0].code == "DRAWDOWN_VELOCITY_1H"
    assert a.decisions[1].reasons[0].code == "BUST_OUT"
    assert a.decisions[1].limit_cap == 920_000  # frozen at what is drawn (minor units)


def test_drawdown_velocity_over_a_day() -> None:
    a = Account(limit=100_000)
    for k in range(12):
        a.draw(0, 50, hours=k * 1.5)
    assert a.actions() == ["warning"]
    assert a.decisions[0].reasons[0].code == "DRAWDOWN_VELOCITY_24H"


def test_limit_request_velocity() -> None:
    a = Account()
    for k in range(3):
        a.draw(0, 20_000, hours=k * 0.3, kind="limit_request")
    assert a.actions() == ["warning"] and a.decisions[0].reasons[0].code == "LIMIT_REQUEST_VELOCITY"


def test_high_utilisation() -> None:
    a = Account(limit=10_000)
    a.draw(0, 9_800, kind="purchase")
    assert a.actions() == ["warning"] and a.decisions[0].reasons[0].code == "HIGH_UTILISATION"


def test_partial_payment_gives_low_payment_ratio_and_counts() -> None:
    a = Account()
    a.draw(0, 1_000, kind="purchase")
    a.statement(1, 1_000)
    a.pay(10, 300)
    a.tick(22)
    s = a.state
    assert (s["partial"], s["missed"]) == (1, 1)
    codes = [r.code for r in fired_rules(default_policy(), s, 0.01, True, leaving=False)]
    assert "LOW_PAYMENT_RATIO" in codes and "DPD_1_30" in codes


def test_repeated_late_payments() -> None:
    a = Account()
    for month in range(2):
        day = 1 + 30 * month
        a.draw(day - 1, 100)
        a.statement(day, 100)
        a.tick(day + 25)
        a.pay(day + 26, 100)
    s = a.state
    assert (s["late"], s["dpd"]) == (2, 0)
    codes = [r.code for r in fired_rules(default_policy(), s, 0.01, True, leaving=False)]
    assert codes == ["REPEATED_LATE"]


def test_hysteresis_no_flapping_on_a_hovering_score() -> None:
    a = Account(score=0.36)
    for day in range(0, 100):
        a.model.score = 0.36 if day % 2 else 0.34  # hovers at the 0.35 watch threshold
        a.draw(day, 1)
        if day % 30 == 5:
            a.statement(day, 30)
            a.pay(day + 1, 30)
    assert a.actions() == ["warning"], "entered once, never cleared while above the exit level"


def test_clear_needs_cooldown_good_payment_and_low_score() -> None:
    a = Account(score=0.4)
    a.draw(0, 100)
    a.model.score = 0.05
    a.draw(10, 1)
    assert a.status == "watch", "cool-down of 30 days not over"
    a.draw(31, 1)
    assert a.status == "watch", "no on-time settlement since the warning"
    a.statement(32, 102)
    a.pay(40, 102)
    assert a.actions() == ["warning", "clear"] and a.status == "normal"
    assert a.decisions[-1].reasons[0].code == "CLEAR_GOOD_BEHAVIOUR"


def test_reopen_after_cooldown_and_sustained_good_behaviour() -> None:
    a = Account(score=0.9)
    a.draw(0, 100)
    assert a.status == "frozen"
    a.model.score = 0.05
    a.statement(1, 100)
    a.pay(5, 100)
    a.draw(31, 50)
    a.statement(32, 50)
    a.pay(35, 50)
    assert a.status == "frozen", "two good settlements but only 35 of 60 cool-down days"
    a.tick(59.9)
    assert a.status == "frozen", "cool-down of 60 days not over"
    a.tick(60)
    assert a.actions() == ["freeze", "reopen"] and a.status == "normal"
    assert a.decisions[-1].limit_cap == a.decisions[-1].credit_limit


def test_no_clear_while_in_arrears() -> None:
    a = Account(score=0.4)
    a.draw(0, 100)
    a.statement(1, 100)
    a.model.score = 0.01
    a.tick(50)
    assert a.status != "normal"


def test_policy_update_applies_from_its_event_time() -> None:
    m = Monitor("p0")
    m.control(ev("policy_update", at(10), policy_version="lenient", thresholds={"dpd.watch": 10}))
    states = {}
    for acct, start in (("EARLY", 0), ("LATE", 15)):
        r = m.apply(None, ev("account_opened", at(start), account=acct, limit=1000, currency="CNY"))
        r = m.apply(r.state, ev("instalment_due", at(start), account=acct, instalment_id="S1", amount=10,
                                currency="CNY", due_date=f"2025-01-{start + 2:02d}"))
        r = m.apply(r.state, ev("dpd_report", at(start + 5), account=acct, days_past_due=3))
        states[acct] = r
    codes = {k: [r.code for d in r.decisions for r in d.reasons] for k, r in states.items()}
    assert "DPD_1_30" in codes["EARLY"]
    assert "DPD_1_30" not in codes["LATE"], "a few days past due is below the new watch level of 10"
    assert states["LATE"].state["dpd"] > 0
    assert m.policy_at(at(9)).version == "default-2026.1" and m.policy_at(at(10)).version == "lenient"


def test_one_day_past_due_reads_in_the_singular() -> None:
    from riskmon.models.early_warning import fired_rules
    from riskmon.models.policy import default_policy
    from riskmon.models.state import new_state

    s = new_state("a1", "CNY", 0, 100_000)
    texts = []
    for dpd in (1, 2):
        s["dpd"] = dpd
        texts.append(fired_rules(default_policy(), s, 0.0, False, leaving=False)[0].text)
    assert texts == ["1 day past due (1-30 bucket)", "2 days past due (1-30 bucket)"]
