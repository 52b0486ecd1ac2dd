"""Bad input is normal input: whatever arrives, the codec and the core answer with a typed rejection or an event."""
from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskmon.models.codec import decode
from riskmon.models.errors import Rejected
from riskmon.models.events import EVENT_TYPES
from riskmon.models.monitor import Monitor

GOOD = {
    "drawdown": {"amount": 10.5, "currency": "CNY", "channel": "app"},
    "purchase": {"amount": 10.5, "currency": "CNY", "channel": "pos", "merchant": "M1"},
    "refund": {"amount": 1, "currency": "CNY", "channel": "pos"},
    "limit_request": {"amount": 5000, "currency": "CNY", "channel": "app"},
    "instalment_due": {"instalment_id": "S1", "amount": 100, "currency": "CNY", "due_date": "2025-02-20"},
    "payment": {"amount": 100, "currency": "CNY", "channel": "app", "instalment_id": "S1"},
    "inflow": {"amount": 1200.5, "currency": "CZK", "kind": "salary", "balance": 350.25},
    "outflow": {"amount": 80, "currency": "CZK", "kind": "card"},
    "charge": {"amount": 12.4, "currency": "CZK", "kind": "penalty_interest", "balance": -120.5},
    "balance_report": {"balance": -42.1, "currency": "CZK"},
    "dpd_report": {"days_past_due": 3},
    "account_opened": {"limit": 1000, "currency": "CNY", "attributes": {"age": 30}},
    "limit_changed": {"limit": 2000, "reason": "review"},
    "review": {"outcome": "hold", "state": "limit_reduced", "reviewer": "j.chen", "note": "keep a reduced line"},
    "policy_update": {"policy_version": "v2", "thresholds": {"score.watch": 0.3}},
    "breaker_command": {"command": "release", "action": "closure", "note": "reviewed by J. Li"},
    "model_command": {"command": "challenge", "learner": "batch", "note": "quarterly challenger"},
}
assert set(GOOD) == set(EVENT_TYPES)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


def _record(type_: str) -> dict:
    return {"type": type_, "event_id": "e1", "account_id": "A1", "ts": "2025-01-05T10:00:00Z", **GOOD[type_]}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_refused_with_a_reason_or_decoded(raw: bytes) -> None:
    try:
        decode(raw)
    except Rejected as r:
        assert r.reason.value and r.detail


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(GOOD)), st.sampled_from(["type", "event_id", "account_id", "ts", "amount", "currency",
                                                        "channel", "merchant", "instalment_id", "due_date",
                                                        "days_past_due", "limit", "attributes", "reason",
                                                        "policy_version", "thresholds", "command", "action", "note", "kind", "learner",
                                                        "balance"]),
       json_values | st.just(...))
def test_any_field_replaced_by_any_json_value_is_refused_or_accepted_never_raised(type_: str, field: str, value: object) -> None:
    body = _record(type_)
    if value is ...:
        body.pop(field, None)
    else:
        body[field] = value
    try:
        ev = decode(orjson.dumps(body))
    except Rejected as r:
        assert r.reason.value
        return
    # Accepted: the core must take it or refuse it with a reason, never raise anything else.
    m = Monitor()
    try:
        if ev.type == "policy_update":
            m.control(ev)  # type: ignore[arg-type]
        elif ev.type == "breaker_command":
            assert m.command(ev) == []  # type: ignore[arg-type]  # nothing held in a fresh shard
        elif ev.type == "model_command":
            m.model_command(ev)  # type: ignore[arg-type]
        else:
            opened = decode(orjson.dumps(_record("account_opened") | {"event_id": "open"}))
            state = m.apply(None, opened).state  # type: ignore[arg-type]
            m.apply(state, ev)  # type: ignore[arg-type]
    except Rejected as r:
        assert r.reason.value


@settings(max_examples=200)
@given(st.text(max_size=30))
def test_odd_text_in_ids_and_timestamps(text: str) -> None:
    for field in ("event_id", "account_id", "ts"):
        body = _record("payment") | {field: text}
        try:
            decode(orjson.dumps(body))
        except Rejected as r:
            assert r.reason.value in {"bad_id", "bad_timestamp", "wrong_type", "missing_field"}


@settings(max_examples=500)
@given(st.sampled_from(["amount", "limit"]),
       st.floats() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.sampled_from([1e307, 1.7976931348623157e308, -0.0, 5e-324]))
def test_any_number_as_money_is_refused_or_kept_exactly(field: str, value: float) -> None:
    """Found here: 1e307 overflowed to infinity when scaled to minor units and escaped as
    OverflowError; 2.4e-194 passed as a positive amount and became 0 minor units."""
    type_ = "payment" if field == "amount" else "account_opened"
    raw = orjson.dumps(_record(type_) | {field: value})  # NaN and infinities are not JSON: orjson writes null
    try:
        ev = decode(raw)
    except Rejected as r:
        assert r.reason.value in {"bad_amount", "wrong_type"}
        return
    got = ev.amount if field == "amount" else ev.limit  # type: ignore[union-attr]
    assert isinstance(got, int) and 0 < got <= 10**12 and abs(got - value * 100) < 1e-3 * max(1.0, abs(value * 100))
