"""Decision events: what the monitor did to a line, and why."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from .codec import format_ts, parse_ts
from .errors import RejectReason, Rejected
from .frozen import quick_init

__all__ = ["DECISION_SCHEMA_VERSION", "Reason", "Decision", "decision_id"]

DECISION_SCHEMA_VERSION = 1


@quick_init
@dataclass(frozen=True, slots=True)
class Reason:
    """A stable reason code and the sentence shown to people."""

    code: str
    text: str
    severity: int = 0


def decision_id(account_id: str, cause_event_id: str, action: str, new_state: str) -> str:
    """Deterministic from the cause, so a replay or a redelivery recreates the same id.

    >>> decision_id("a1", "e9", "freeze", "frozen") == decision_id("a1", "e9", "freeze", "frozen")
    True
    """
    key = f"{account_id}\x1f{cause_event_id}\x1f{action}\x1f{new_state}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


@quick_init
@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    account_id: str
    action: str
    previous_state: str
    new_state: str
    score: float
    reasons: tuple[Reason, ...]
    model_version: str
    policy_version: str
    cause_event_id: str
    event_ts: int
    credit_limit: int
    limit_cap: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": DECISION_SCHEMA_VERSION,
            "decision_id": self.decision_id,
            "account_id": self.account_id,
            "action": self.action,
            "previous_state": self.previous_state,
            "new_state": self.new_state,
            "score": round(self.score, 6),
            "reasons": [{"code": r.code, "text": r.text} for r in self.reasons],
            "model_version": self.model_version,
            "policy_version": self.policy_version,
            "cause_event_id": self.cause_event_id,
            "event_ts": format_ts(self.event_ts),
            "credit_limit": self.credit_limit / 100,
            "limit_cap": self.limit_cap / 100,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Decision:
        """The decision a :meth:`to_dict` object (a record of the decisions topic) holds; :class:`Rejected`
        for anything else, and for a ``schema_version`` newer than this code reads.

        Reasons come back without their severity (the record does not carry it).

        >>> d = Decision("id1", "a1", "freeze", "watch", "frozen", 0.91, (Reason("SCORE_FREEZE", "risk score 0.91", 3),),
        ...              "p0.v1", "policy-1", "e9", 1735689600000, 500000, 0)
        >>> Decision.from_dict(d.to_dict()) == Decision(**{**{f: getattr(d, f) for f in d.__slots__},
        ...                                                 "reasons": (Reason("SCORE_FREEZE", "risk score 0.91"),)})
        True
        """
        if not isinstance(d, dict):
            raise Rejected(RejectReason.NOT_AN_OBJECT, f"a decision is a JSON object, not a {type(d).__name__}")
        version = d.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool) or version > DECISION_SCHEMA_VERSION:
            raise Rejected(RejectReason.WRONG_TYPE, f"decision schema_version {version!r}: this riskmon reads "
                                                    f"versions up to {DECISION_SCHEMA_VERSION} (upgrade riskmon)")
        try:
            reasons = tuple(Reason(str(r["code"]), str(r["text"])) for r in d["reasons"])
            texts = {f: d[f] for f in ("decision_id", "account_id", "action", "previous_state", "new_state",
                                       "model_version", "policy_version", "cause_event_id")}
            numbers = {f: d[f] for f in ("score", "credit_limit", "limit_cap")}
            ts = d["event_ts"]
        except (KeyError, TypeError) as exc:
            raise Rejected(RejectReason.MISSING_FIELD, f"not a decision: {type(exc).__name__} {exc}") from None
        if any(not isinstance(v, str) for v in texts.values()) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers.values()):
            raise Rejected(RejectReason.WRONG_TYPE, "not a decision: a field has the wrong type")
        return cls(score=float(numbers["score"]), reasons=reasons, event_ts=parse_ts(ts, "event_ts"),
                   credit_limit=round(numbers["credit_limit"] * 100), limit_cap=round(numbers["limit_cap"] * 100),
                   **texts)
