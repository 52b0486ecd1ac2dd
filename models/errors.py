"""The core's one exception module: every way a record can be refused."""
from __future__ import annotations

import enum

__all__ = ["RejectReason", "Rejected"]


class RejectReason(str, enum.Enum):
    """Stable, typed codes for refused records (they are metric label values)."""

    TOO_LARGE = "too_large"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BAD_AMOUNT = "bad_amount"
    UNKNOWN_TYPE = "unknown_type"
    BAD_TIMESTAMP = "bad_timestamp"
    UNKNOWN_CURRENCY = "unknown_currency"
    BAD_ID = "bad_id"
    BAD_POLICY = "bad_policy"
    UNKNOWN_ACCOUNT = "unknown_account"
    CURRENCY_MISMATCH = "currency_mismatch"
    ACCOUNT_EXISTS = "account_exists"
    WRONG_TOPIC = "wrong_topic"
    LATE_EVENT = "late_event"
    FUTURE_EVENT = "future_event"
    INTERNAL_ERROR = "internal_error"


class Rejected(ValueError):
    """A record the core refuses, with a reason code and a sentence a person can read.

    >>> r = Rejected(RejectReason.MISSING_FIELD, "field 'amount' is missing")
    >>> r.reason.value, str(r)
    ('missing_field', "missing_field: field 'amount' is missing")
    """

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
