"""The one codec: bytes -> typed events, decisions -> bytes, on orjson.

Every way a record can be wrong ends in :class:`models.errors.Rejected` with a
reason code and a sentence; nothing else escapes :func:`decode`.

>>> e = decode(b'{"type":"payment","event_id":"e1","account_id":"a1",'
...            b'"ts":"2025-01-05T10:00:00Z","amount":120.5,"currency":"CNY","channel":"app"}')
>>> e.amount, e.ts
(12050, 1736071200000)
>>> try:
...     decode(b'{"type":"payment"')
... except Rejected as r:
...     print(r.reason.value)
malformed_json
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import orjson

from .errors import RejectReason, Rejected
from .units import DAY_MS
from .vocabulary import GUARDABLE, LEARNERS, STATUSES
from .events import (
    CASH_FLOW_KINDS,
    CONTROL_TYPES,
    CURRENCIES,
    EVENT_TYPES,
    MODEL_COMMANDS,
    SHADOW_COMMANDS,
    REVIEW_OUTCOMES,
    TRANSACTION_TYPES,
    Review,
    AccountOpened,
    BalanceReport,
    BreakerCommand,
    CashFlow,
    DpdReport,
    Event,
    InstalmentDue,
    LimitChanged,
    ModelCommand,
    Payment,
    PolicyUpdate,
    Transaction,
)

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "MAX_AMOUNT_MINOR",
    "decode",
    "decode_obj",
    "dumps",
    "format_ts",
    "parse_ts",
]

DEFAULT_MAX_RECORD_BYTES = 16_384
# Larger than any consumer line anywhere (10 billion units): beyond it is a bug upstream.
MAX_AMOUNT_MINOR = 10**12
# Event times run from 1900 (a bank's oldest books) to 2100; a year outside is a typo
# upstream (0205, 20250). A live worker also refuses events dated more than
# RISKMON_MAX_FUTURE_S ahead of its clock (replay has no clock to ask).
_MIN_TS = -2_208_988_800_000  # 1900-01-01
_MAX_TS = 4_102_444_800_000  # 2100-01-01
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}")
_ID_OK = _ID.fullmatch
_TEXT_MAX = 128
# What an amount's hundredths must be a multiple of, per currency (100 for a currency without decimals).
_SCALE = {code: 10 ** (2 - min(exponent, 2)) for code, exponent in CURRENCIES.items()}
_MAX_UNITS = MAX_AMOUNT_MINOR / 100


def dumps(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, so equal content gives equal bytes."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def format_ts(ms: int) -> str:
    """Epoch milliseconds -> RFC 3339 UTC text, e.g. ``2025-01-01T00:00:00Z``."""
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{ms % 1000:03d}Z" if ms % 1000 else "Z")


def parse_ts(value: Any, name: str = "ts") -> int:
    """RFC 3339 text with an offset -> epoch milliseconds UTC."""
    if not isinstance(value, str):
        raise Rejected(RejectReason.WRONG_TYPE, f"field '{name}' must be an RFC 3339 string")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(RejectReason.BAD_TIMESTAMP, f"field '{name}' is not RFC 3339: {value[:40]!r}") from None
    if dt.tzinfo is None:
        raise Rejected(RejectReason.BAD_TIMESTAMP, f"field '{name}' has no UTC offset: {value[:40]!r}")
    if not 1900 <= dt.year <= 2100:  # before the arithmetic: year 1 minus an offset overflows
        raise Rejected(RejectReason.BAD_TIMESTAMP, f"field '{name}' is outside 1900..2100: {value[:40]!r}")
    ms = (dt - _EPOCH) // _MS  # exact: float seconds * 1000 is off by one millisecond now and then
    if not _MIN_TS <= ms < _MAX_TS:
        raise Rejected(RejectReason.BAD_TIMESTAMP, f"field '{name}' is outside 1900..2100: {value[:40]!r}")
    return ms


def _parse_date_end(value: Any, name: str) -> int:
    """A calendar date (UTC) -> the first millisecond after it: paid before this is on time."""
    if not isinstance(value, str) or len(value) != 10:
        raise Rejected(RejectReason.WRONG_TYPE, f"field '{name}' must be a date YYYY-MM-DD")
    return parse_ts(value + "T00:00:00+00:00", name) + DAY_MS


def _req(obj: dict[str, Any], name: str) -> Any:
    try:
        return obj[name]
    except KeyError:
        raise Rejected(RejectReason.MISSING_FIELD, f"field '{name}' is missing") from None


def _ident(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if type(value) is str and _ID_OK(value):  # the common case, checked once; anything else as below
        return value
    value = _req(obj, name)
    if not isinstance(value, str):
        raise Rejected(RejectReason.WRONG_TYPE, f"field '{name}' must be a string")
    if not _ID.fullmatch(value):
        raise Rejected(
            RejectReason.BAD_ID,
            f"field '{name}' must be 1-64 ASCII letters, digits or ._:- (got {value[:40]!r})",
        )
    return value


def _text(obj: dict[str, Any], name: str, default: str | None = None) -> str:
    value = obj.get(name, default)
    if value is None:
        raise Rejected(RejectReason.MISSING_FIELD, f"field '{name}' is missing")
    if not isinstance(value, str):
        raise Rejected(RejectReason.WRONG_TYPE, f"field '{name}' must be a string")
    if len(value) > _TEXT_MAX or not value.isprintable():
        raise Rejected(RejectReason.WRONG_TYPE, f"field '{name}' must be printable text of at most {_TEXT_MAX} characters")
    return value


def _money(obj: dict[str, Any], name: str, allow_zero: bool = False, currency: str | None = None,
           signed: bool = False) -> int:
    """A decimal amount in units -> integer hundredths, with no more decimals than ``currency`` has (at most two)."""
    value: Any = obj.get(name)
    kind = type(value)
    # The common case (a positive amount that fits its currency) in one pass; anything else is judged below.
    if (kind is int or kind is float) and not signed and 0 < value <= _MAX_UNITS:
        minor = round(value * 100)
        if minor and (kind is int or abs(value * 100 - minor) <= 1e-6 * max(1.0, value)) and (
                currency is None or not minor % _SCALE[currency]):
            return int(minor)
    value = _req(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected(RejectReason.WRONG_TYPE, f"field '{name}' must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise Rejected(RejectReason.BAD_AMOUNT, f"field '{name}' is not finite")
    if signed:
        magnitude = _money({name: abs(value)}, name, allow_zero=True, currency=currency)
        return -magnitude if value < 0 else magnitude
    if value < 0:
        raise Rejected(RejectReason.BAD_AMOUNT, f"field '{name}' is negative: {value}")
    if value == 0 and not allow_zero:
        raise Rejected(RejectReason.BAD_AMOUNT, f"field '{name}' is zero")
    # Compared before scaling: near 1e308, value * 100 is infinite and round() raises.
    if value > MAX_AMOUNT_MINOR / 100:
        raise Rejected(RejectReason.BAD_AMOUNT, f"field '{name}' is absurdly large: {value}")
    minor = round(value * 100)
    if minor == 0 and not allow_zero:  # e.g. 1e-9: positive, but nothing in minor units
        raise Rejected(RejectReason.BAD_AMOUNT, f"field '{name}' rounds to zero: {value}")
    decimals = 2 if currency is None else min(CURRENCIES[currency], 2)
    scale = 10 ** (2 - decimals)
    if abs(value * 100 - minor) > 1e-6 * max(1.0, abs(value)) or minor % scale:
        where = "" if currency is None else f" ({currency} has {CURRENCIES[currency]})"
        raise Rejected(RejectReason.BAD_AMOUNT, f"field '{name}' has more than {decimals} decimals{where}: {value}")
    return int(minor)


def _currency(obj: dict[str, Any]) -> str:
    value = _req(obj, "currency")
    if not isinstance(value, str):
        raise Rejected(RejectReason.WRONG_TYPE, "field 'currency' must be a string")
    if value not in CURRENCIES:
        raise Rejected(RejectReason.UNKNOWN_CURRENCY, f"currency {value[:8]!r} is not an ISO 4217 currency with a minor unit")
    return value


def _kind(obj: dict[str, Any], type_: str) -> str:
    value = _text(obj, "kind", "other")
    if value not in CASH_FLOW_KINDS[type_]:
        raise Rejected(RejectReason.WRONG_TYPE, f"field 'kind' of a {type_} must be one of {', '.join(CASH_FLOW_KINDS[type_])}")
    return value


def _transaction(o: dict[str, Any], t: str, eid: str, aid: str, ts: int) -> Event:
    merchant = o.get("merchant")
    cur = _currency(o)
    return Transaction(
        t, eid, aid, ts, _money(o, "amount", currency=cur), cur, _text(o, "channel"),
        None if merchant is None else _text(o, "merchant"),
    )


def _cash_flow(o: dict[str, Any], t: str, eid: str, aid: str, ts: int) -> Event:
    cur = _currency(o)
    balance = None if o.get("balance") is None else _money(o, "balance", currency=cur, signed=True)
    return CashFlow(t, eid, aid, ts, _money(o, "amount", currency=cur), cur, _kind(o, t), balance)


def _balance_report(o: dict[str, Any], t: str, eid: str, aid: str, ts: int) -> Event:
    cur = _currency(o)
    return BalanceReport(t, eid, aid, ts, _money(o, "balance", currency=cur, signed=True), cur)


def _instalment_due(o: dict[str, Any], t: str, eid: str, aid: str, ts: int) -> Event:
    due_ts = _parse_date_end(_req(o, "due_date"), "due_date")
    if due_ts <= ts:
        raise Rejected(RejectReason.BAD_TIMESTAMP, "field 'due_date' is not after the statement time")
    cur = _currency(o)
    return InstalmentDue(t, eid, aid, ts, _ident(o, "instalment_id"), _money(o, "amount", currency=cur), cur, due_ts)


def _payment(o: dict[str, Any], t: str, eid: str, aid: str, ts: int) -> Event:
    cur = _currency(o)
    iid = None if o.get("instalment_id") is None else _ident(o, "instalment_id")
    return Payment(t, eid, aid, ts, _money(o, "amount", currency=cur), cur, _text(o, "channel", "unknown"), iid)


def _dpd_report(o: dict[str, Any], t: str, eid: str, aid: str, ts: int) -> Event:
    dpd = _req(o, "days_past_due")
    if isinstance(dpd, bool) or not isinstance(dpd, int):
        raise Rejected(RejectReason.WRONG_TYPE, "field 'days_past_due' must be an integer")
    if not 0 <= dpd <= 3660:
        raise Rejected(RejectReason.BAD_AMOUNT, f"field 'days_past_due' is out of range 0..3660: {dpd}")
    return DpdReport(t, eid, aid, ts, dpd)


def _account_opened(o: dict[str, Any], t: str, eid: str, aid: str, ts: int) -> Event:
    attrs = o.get("attributes", {})
    if not isinstance(attrs, dict) or len(attrs) > 32:
        raise Rejected(RejectReason.WRONG_TYPE, "field 'attributes' must be an object of at most 32 entries")
    for k, v in attrs.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, str)) or (isinstance(v, float) and not math.isfinite(v)):
            raise Rejected(RejectReason.WRONG_TYPE, f"attribute {k[:32]!r} must be a finite number or a string")
    cur = _currency(o)
    return AccountOpened(t, eid, aid, ts, _money(o, "limit", currency=cur), cur, dict(attrs))


def _limit_changed(o: dict[str, Any], t: str, eid: str, aid: str, ts: int) -> Event:
    return LimitChanged(t, eid, aid, ts, _money(o, "limit", allow_zero=True), _text(o, "reason", "unspecified"))


def _policy_update(o: dict[str, Any], t: str, eid: str, aid: str, ts: int) -> Event:
    version = _text(o, "policy_version")
    shadow = o.get("shadow", "")
    if "shadow" in o and shadow not in SHADOW_COMMANDS:
        raise Rejected(RejectReason.WRONG_TYPE, f"field 'shadow' must be {', '.join(repr(c) for c in SHADOW_COMMANDS)}")
    # A promotion or a drop names the candidate it acts on by its version, and changes no threshold.
    if shadow in ("promote", "drop"):
        if "thresholds" in o:
            raise Rejected(RejectReason.WRONG_TYPE, f"a shadow {shadow} changes no threshold: leave out 'thresholds'")
        return PolicyUpdate(t, eid, ts, version, {}, shadow=shadow)
    thresholds = _req(o, "thresholds")
    if not isinstance(thresholds, dict):
        raise Rejected(RejectReason.WRONG_TYPE, "field 'thresholds' must be an object")
    return PolicyUpdate(t, eid, ts, version, thresholds, shadow=shadow)


def _breaker_command(o: dict[str, Any], t: str, eid: str, aid: str, ts: int) -> Event:
    command, action = _req(o, "command"), _req(o, "action")
    if command not in ("release", "drop"):
        raise Rejected(RejectReason.WRONG_TYPE, "field 'command' must be 'release' or 'drop'")
    if action not in GUARDABLE:
        raise Rejected(RejectReason.WRONG_TYPE, f"field 'action' must be {' or '.join(repr(a) for a in GUARDABLE)}")
    return BreakerCommand(t, eid, ts, command, action, _text(o, "note", ""))


def _only_for(o: dict[str, Any], field: str, kind: str, needed_by: str, allowed: tuple[str, ...]) -> Any:
    """``o[field]``, which a record of ``kind`` ``needed_by`` must give (one of ``allowed``) and any other must not."""
    value = o.get(field)
    if kind == needed_by:
        if value not in allowed:
            raise Rejected(RejectReason.WRONG_TYPE, f"a {needed_by} needs field '{field}': one of {', '.join(allowed)}")
    elif value is not None:
        raise Rejected(RejectReason.WRONG_TYPE, f"field '{field}' belongs to a {needed_by}, not a {kind}")
    return value


def _model_command(o: dict[str, Any], t: str, eid: str, aid: str, ts: int) -> Event:
    command = _req(o, "command")
    if command not in MODEL_COMMANDS:
        raise Rejected(RejectReason.WRONG_TYPE, f"field 'command' must be {', '.join(repr(c) for c in MODEL_COMMANDS)}")
    learner = _only_for(o, "learner", command, "challenge", LEARNERS)
    return ModelCommand(t, eid, ts, command, learner or "", _text(o, "note", ""))


def _review(o: dict[str, Any], t: str, eid: str, aid: str, ts: int) -> Event:
    outcome = _req(o, "outcome")
    if outcome not in REVIEW_OUTCOMES:
        raise Rejected(RejectReason.WRONG_TYPE, f"field 'outcome' must be {', '.join(repr(x) for x in REVIEW_OUTCOMES)}")
    state = _only_for(o, "state", outcome, "hold", STATUSES)
    return Review(t, eid, aid, ts, outcome, state or ("normal" if outcome == "reinstate" else ""), _text(o, "reviewer"),
                  _text(o, "note", ""))


_BUILDERS: dict[str, Callable[[dict[str, Any], str, str, str, int], Event]] = {
    **{t: _transaction for t in TRANSACTION_TYPES},
    "inflow": _cash_flow,
    "outflow": _cash_flow,
    "charge": _cash_flow,
    "balance_report": _balance_report,
    "instalment_due": _instalment_due,
    "payment": _payment,
    "dpd_report": _dpd_report,
    "account_opened": _account_opened,
    "limit_changed": _limit_changed,
    "review": _review,
    "policy_update": _policy_update,
    "breaker_command": _breaker_command,
    "model_command": _model_command,
}
assert set(_BUILDERS) == set(EVENT_TYPES)


def decode_obj(obj: Any) -> Event:
    """A parsed JSON value -> a typed event, or :class:`Rejected`."""
    if not isinstance(obj, dict):
        raise Rejected(RejectReason.NOT_AN_OBJECT, f"record is a JSON {type(obj).__name__}, not an object")
    t = _req(obj, "type")
    if not isinstance(t, str):
        raise Rejected(RejectReason.WRONG_TYPE, "field 'type' must be a string")
    builder = _BUILDERS.get(t)
    if builder is None:
        raise Rejected(RejectReason.UNKNOWN_TYPE, f"event type {t[:40]!r} is not one of {', '.join(EVENT_TYPES)}")
    eid = _ident(obj, "event_id")
    aid = "control" if t in CONTROL_TYPES else _ident(obj, "account_id")
    ts = parse_ts(_req(obj, "ts"))
    return builder(obj, t, eid, aid, ts)


def decode(raw: bytes | bytearray | memoryview | str, max_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Event:
    """Raw record bytes -> a typed event. Raises only :class:`Rejected`."""
    if len(raw) > max_bytes:
        raise Rejected(RejectReason.TOO_LARGE, f"record is {len(raw)} bytes, the limit is {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejected(RejectReason.MALFORMED_JSON, f"not valid JSON: {str(exc)[:80]}") from None
    return decode_obj(obj)
