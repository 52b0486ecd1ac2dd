"""A reviewer's decision on one account: reinstate, hold at a state, confirm; it stands until it lapses
or the arrears grow, and replay honours it."""
from __future__ import annotations

import io
import pathlib

import orjson
import pytest

from riskmon.models.codec import dumps, format_ts, parse_ts
from riskmon.models.errors import Rejected
from riskmon.models.monitor import Monitor
from riskmon.models.policy import default_policy
from riskmon.models.simulate import simulate
from riskmon.streams.replay import replay

from .helpers import Account, at, ev


def _review(day: float, outcome: str, **fields: object) -> object:
    return ev("review", at(day), outcome=outcome, reviewer="j.chen", **fields)


def _closed() -> Account:
    a = Account()
    a.draw(0, 5_000)
    a.tick(1, dpd=125)  # the ledger reports 125 days past due: closed
    assert a.status == "closed"
    return a


def test_a_reinstated_line_is_reopened_with_the_reviewers_note_and_not_closed_again_while_its_arrears_stand() -> None:
    a = _closed()
    a.apply(_review(2, "reinstate", note="hardship plan agreed"))
    d = a.decisions[-1]
    assert (d.action, d.previous_state, d.new_state, a.status) == ("reopen", "closed", "normal", "normal")
    assert d.reasons[0].code == "MANUAL_REVIEW" and "reinstate (normal) by j.chen: hardship plan agreed" in d.reasons[0].text
    assert d.limit_cap == d.credit_limit  # the line is open again
    n = len(a.decisions)
    for day in (3, 10, 25):  # the same arrears, ageing: no automatic escalation
        a.tick(day, dpd=125 + day)
    assert len(a.decisions) == n and a.status == "normal"
    a.tick(40, dpd=170)  # 30 days after the review: the protection has lapsed
    assert a.status == "closed" and a.decisions[-1].action == "closure"


def test_the_protection_ends_when_the_arrears_grow() -> None:
    a = Account()
    a.tick(1, dpd=40)  # limit_reduced (31-60 bucket)
    a.apply(_review(2, "reinstate"))
    assert a.status == "normal"
    a.tick(5, dpd=45)  # ageing within the bucket: protected
    assert a.status == "normal"
    a.tick(25, dpd=65)  # into the 61-90 bucket: the arrears grew, the policy acts again
    assert a.status == "frozen"


def test_a_hold_sets_the_state_and_a_confirm_leaves_it_with_a_reviewed_decision() -> None:
    a = _closed()
    a.apply(_review(2, "hold", state="limit_reduced", note="keep a reduced line"))
    assert a.status == "limit_reduced" and a.decisions[-1].action == "reopen"
    a.tick(5, dpd=129)
    assert a.status == "limit_reduced", "no escalation beyond the held state"
    a.apply(_review(6, "confirm", note="agreed"))
    d = a.decisions[-1]
    assert (d.action, d.previous_state, d.new_state) == ("reviewed", "limit_reduced", "limit_reduced")
    a.tick(7, dpd=130)
    assert a.status == "limit_reduced", "a confirmation protects the state it confirms"
    a.statement(8, 100, due_in_days=1)
    a.tick(12, dpd=134)  # another instalment missed: the arrears grew
    assert a.status == "closed"


def test_a_review_settles_a_held_move() -> None:
    m = Monitor("p0", default_policy().updated({"breaker.min_count": 1, "breaker.max_share": 0.0001}, "strict"))
    r = m.apply(None, ev("account_opened", at(0), account="H1", limit=5000, currency="CNY"))
    r = m.apply(r.state, ev("dpd_report", at(1), account="H1", days_past_due=125))
    assert [d.action for d in r.decisions] == ["held"] and r.state["status"] == "normal"
    r = m.apply(r.state, ev("review", at(2), account="H1", outcome="confirm", reviewer="j.chen"))
    assert [d.action for d in r.decisions] == ["hold_dropped", "reviewed"] and "hold" not in r.state
    assert m.held.get("closure") == set(), "the breaker no longer counts it as held"
    r = m.apply(r.state, ev("dpd_report", at(3), account="H1", days_past_due=126))
    assert r.decisions == [] and r.state["status"] == "normal", "the confirmed state is not held again at once"


@pytest.mark.parametrize("fields, why", [
    ({"outcome": "pardon", "reviewer": "x"}, "outcome"),
    ({"outcome": "hold", "reviewer": "x"}, "a hold needs field 'state'"),
    ({"outcome": "hold", "state": "gone", "reviewer": "x"}, "a hold needs field 'state'"),
    ({"outcome": "reinstate", "state": "watch", "reviewer": "x"}, "belongs to a hold"),
    ({"outcome": "confirm"}, "reviewer"),
])
def test_bad_reviews_are_refused(fields: dict, why: str) -> None:
    with pytest.raises(Rejected, match=why):
        ev("review", at(1), **fields)


def test_replay_honours_a_review(tmp_path: pathlib.Path) -> None:
    events, _ = simulate(300, 150, seed=3)  # 150 days: the shipped policy closes at 121 days past due
    log = tmp_path / "ev.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    out = io.BytesIO()
    replay(log, out)
    closure = next(d for d in map(orjson.loads, out.getvalue().splitlines()) if d["action"] == "closure")
    review = {"type": "review", "event_id": "review-1", "account_id": closure["account_id"],
              "ts": format_ts(parse_ts(closure["event_ts"]) + 3_600_000),
              "outcome": "reinstate", "reviewer": "j.chen", "note": "closed in error"}
    with_review = tmp_path / "reviewed.jsonl"
    with_review.write_bytes(log.read_bytes() + dumps(review) + b"\n")
    out2 = io.BytesIO()
    replay(with_review, out2)
    mine = [d for d in map(orjson.loads, out2.getvalue().splitlines()) if d["cause_event_id"] == "review-1"]
    assert [(d["action"], d["new_state"], d["reasons"][0]["code"]) for d in mine] == [("reopen", "normal", "MANUAL_REVIEW")]


def test_a_policy_saved_before_the_review_section_restores_with_the_shipped_protection() -> None:
    from riskmon.models.policy import Policy

    p = default_policy()
    old = Policy.__new__(Policy)
    old.__setstate__(p.__getstate__()[:-1])  # a snapshot's policy from before the section
    assert old.review.protect_days == 30 and old == p and old.updated({"dpd.watch": 2}, "v2").dpd.watch == 2


def test_protection_longer_than_ten_years_is_a_bad_policy() -> None:
    with pytest.raises(Rejected, match="review.protect_days"):
        default_policy().updated({"review.protect_days": 1e12}, "x")


def test_a_policy_diff_honours_a_review_in_force() -> None:
    from riskmon.models.policy_diff import policy_diff

    a = Account()
    a.tick(1, dpd=40)
    a.apply(_review(2, "reinstate"))
    tight = default_policy().updated({"dpd.limit": 11, "dpd.freeze": 21, "dpd.close": 31}, "tight")
    assert a.state is not None and policy_diff([a.state], default_policy(), tight).moves == {}
