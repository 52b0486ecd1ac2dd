"""Decision events: what the monitor did to a line, and why."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from .codec import format_ts

__all__ = ["DECISION_SCHEMA_VERSION", "Reason", "Decision", "decision_id"]

DECISION_SCHEMA_VERSION = 1


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
