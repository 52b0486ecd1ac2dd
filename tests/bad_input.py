"""The bad-input classes tried, each with the reason a worker must give it (README's table comes from this list).

Each entry: (class, record bytes, input topic category, expected dead-letter reason, or None when the
record is not dead-lettered but counted otherwise).
"""
from __future__ import annotations

import orjson

GOOD_PURCHASE = {"type": "purchase", "event_id": "bad-ok", "account_id": "A0000001", "ts": "2025-01-20T10:00:00Z",
                 "amount": 12.5, "currency": "CNY", "channel": "app", "merchant": "M1"}


def _with(n: int, **changes: object) -> bytes:
    body = dict(GOOD_PURCHASE, event_id=f"bad-{n}")
    for k, v in changes.items():
        if v is ...:
            body.pop(k, None)
        else:
            body[k] = v
    return orjson.dumps(body)


def _cash(n: int, **changes: object) -> bytes:
    body: dict[str, object] = {"type": "inflow", "event_id": f"bad-{n}", "account_id": "A0000001",
                               "ts": "2025-01-20T10:00:00Z", "amount": 120.5, "currency": "CNY", "kind": "salary"}
    body.update(changes)
    return orjson.dumps(body)


CASES: list[tuple[str, bytes, str, str]] = [
    ("malformed JSON", b'{"type": "purchase", "event_id": ', "transactions", "malformed_json"),
    ("truncated record", _with(1)[:57], "transactions", "malformed_json"),
    ("empty record", b"", "transactions", "malformed_json"),
    ("invalid UTF-8", b'{"type": "purchase", "event_id": "\xff\xfe"}', "transactions", "malformed_json"),
    ("NaN literal", _with(2).replace(b'"amount":12.5', b'"amount":NaN'), "transactions", "malformed_json"),
    ("infinity (1e400)", _with(3).replace(b'"amount":12.5', b'"amount":1e400'), "transactions", "malformed_json"),
    ("huge amount (1e308)", _with(28, amount=1e308), "transactions", "bad_amount"),
    ("deeply nested JSON", b"[" * 2000 + b"]" * 2000, "transactions", "malformed_json"),
    ("not an object", b"[1, 2, 3]", "transactions", "not_an_object"),
    ("oversized record (20 KB)", _with(4, merchant="M" * 20_000), "transactions", "too_large"),
    ("missing field", _with(5, amount=...), "transactions", "missing_field"),
    ("wrong type (amount as text)", _with(6, amount="12.50"), "transactions", "wrong_type"),
    ("wrong type (boolean amount)", _with(7, amount=True), "transactions", "wrong_type"),
    ("negative amount", _with(8, amount=-5), "transactions", "bad_amount"),
    ("absurd amount (1e12)", _with(9, amount=1e12), "transactions", "bad_amount"),
    ("amount below a cent", _with(10, amount=0.001), "transactions", "bad_amount"),
    ("three decimals", _with(11, amount=1.234), "transactions", "bad_amount"),
    ("timestamp before 1900 (a typo for 1995)", _with(12, ts="1895-01-01T00:00:00Z"), "transactions", "bad_timestamp"),
    ("timestamp without offset", _with(13, ts="2025-01-20T10:00:00"), "transactions", "bad_timestamp"),
    ("timestamp far in the future (2099)", _with(14, ts="2099-01-01T00:00:00Z"), "transactions", "future_event"),
    ("unknown event type", _with(15, type="chargeback"), "transactions", "unknown_type"),
    ("unknown currency", _with(16, currency="XXX"), "transactions", "unknown_currency"),
    ("zero-width space in an id", _with(17, account_id="A000\u200b0001"), "transactions", "bad_id"),
    ("fullwidth digits in an id", _with(18, account_id="A\uff10\uff10\uff10\uff11"), "transactions", "bad_id"),
    ("right-to-left override in an id", _with(19, event_id="bad-\u202e91"), "transactions", "bad_id"),
    ("emoji in an id", _with(20, account_id="A\U0001f4a5"), "transactions", "bad_id"),
    ("control character in a text field", _with(21, channel="ap\x00p"), "transactions", "wrong_type"),
    ("event for an unknown account", _with(22, account_id="GHOST01"), "transactions", "unknown_account"),
    ("event on the wrong topic", orjson.dumps({"type": "dpd_report", "event_id": "bad-23", "account_id": "A0000001",
                                               "ts": "2025-01-20T10:00:00Z", "days_past_due": 3}),
     "transactions", "wrong_topic"),
    ("currency other than the line's", _with(24, currency="USD"), "transactions", "currency_mismatch"),
    ("second opening of an open account", orjson.dumps({"type": "account_opened", "event_id": "bad-25",
                                                        "account_id": "A0000001", "ts": "2025-01-20T10:00:00Z",
                                                        "limit": 1000, "currency": "CNY"}), "lifecycle", "account_exists"),
    ("policy update with an unknown key", orjson.dumps({"type": "policy_update", "event_id": "bad-26",
                                                        "ts": "2025-01-20T10:00:00Z", "policy_version": "x",
                                                        "thresholds": {"score.nonsense": 1}}), "control", "bad_policy"),
    ("cash flow of an unknown kind", _cash(40, kind="lottery"), "transactions", "wrong_type"),
    ("charge with a negative amount", _cash(41, type="charge", amount=-5, kind="fee"), "transactions", "bad_amount"),
    ("balance as text", orjson.dumps({"type": "balance_report", "event_id": "bad-42", "account_id": "A0000001",
                                      "ts": "2025-01-20T10:00:00Z", "balance": "-12.30", "currency": "CNY"}),
     "transactions", "wrong_type"),
    ("balance report without its balance", orjson.dumps({"type": "balance_report", "event_id": "bad-43",
                                                         "account_id": "A0000001", "ts": "2025-01-20T10:00:00Z",
                                                         "currency": "CNY"}), "transactions", "missing_field"),
    ("cash flow in a currency with no minor unit (gold)", _cash(44, currency="XAU"), "transactions", "unknown_currency"),
    ("cash flow with more decimals than its currency has", _cash(45, amount=12.345), "transactions", "bad_amount"),
    ("policy update breaking the order of thresholds", orjson.dumps({"type": "policy_update", "event_id": "bad-27",
                                                                     "ts": "2025-01-20T10:00:00Z", "policy_version": "x",
                                                                     "thresholds": {"dpd.close": 5}}), "control", "bad_policy"),
]
