"""Small builders for core tests: events go through the public codec."""
from __future__ import annotations

from typing import Any

import orjson

from riskmon.models.codec import decode, format_ts
from riskmon.models.units import DAY_MS
from riskmon.models.events import Event
from riskmon.models.policy import Policy, default_policy
from riskmon.models.risk_model import RiskModel
from riskmon.models.state import AccountState
from riskmon.models.step import Context, StepResult, step

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
HOUR_MS = 3_600_000


def at(days: float = 0, hours: float = 0) -> int:
    return T0 + int(days * DAY_MS + hours * HOUR_MS)


_seq = [0]


def ev(type_: str, ts: int, account: str = "A1", **fields: Any) -> Event:
    _seq[0] += 1
    body: dict[str, Any] = {"type": type_, "event_id": f"e{_seq[0]}", "account_id": account, "ts": format_ts(ts)}
    body.update(fields)
    return decode(orjson.dumps(body))


class FixedScore(RiskModel):
    """A model whose score the test sets: the policy, not the model, is under test."""

    def __init__(self, score: float = 0.01) -> None:
        super().__init__()
        self.score = score

    def predict_proba_one(self, x: dict[str, float], **kw: Any) -> dict[bool | str | int, float]:
        return {False: 1 - self.score, True: self.score}

    def score_vector(self, names: tuple[str, ...], x: list[float]) -> float:
        return self.score


class Account:
    """Drives one account through ``step`` and remembers every decision."""

    def __init__(self, limit: float = 10_000, score: float = 0.01, policy: Policy | None = None, opened: int = T0) -> None:
        self.model = FixedScore(score)
        self.limit = limit
        self.policy = policy or default_policy()
        self.state: AccountState | None = None
        self.decisions: list[Any] = []
        self.outcomes: list[Any] = []
        self.apply(ev("account_opened", opened, limit=limit, currency="CNY"))

    def ctx(self) -> Context:
        return Context(self.policy, self.model, "test.v0", True, 30)

    def apply(self, event: Event) -> StepResult:
        r = step(self.state, event, self.ctx())  # type: ignore[arg-type]
        self.state = r.state
        self.decisions += r.decisions
        self.outcomes += r.outcomes
        return r

    @property
    def status(self) -> str:
        assert self.state is not None
        return self.state["status"]

    def actions(self) -> list[str]:
        return [d.action for d in self.decisions]

    def codes(self) -> list[str]:
        return [r.code for d in self.decisions for r in d.reasons]

    def statement(self, day: float, amount: float, due_in_days: int = 20, iid: str | None = None) -> None:
        due = format_ts(at(day + due_in_days))[:10]
        self.apply(ev("instalment_due", at(day), instalment_id=iid or f"S{int(day)}", amount=amount, currency="CNY", due_date=due))

    def pay(self, day: float, amount: float) -> None:
        self.apply(ev("payment", at(day), amount=amount, currency="CNY", channel="app"))

    def draw(self, day: float, amount: float, hours: float = 0, kind: str = "drawdown") -> None:
        self.apply(ev(kind, at(day, hours), amount=amount, currency="CNY", channel="app"))

    def tick(self, day: float, dpd: int | None = None) -> None:
        """Advance the account clock; with ``dpd``, by the servicing ledger's report of it.

        Without, by an event that changes nothing else (the limit confirmed as it is).
        """
        if dpd is None:
            self.apply(ev("limit_changed", at(day), limit=self.limit, reason="review"))
        else:
            self.apply(ev("dpd_report", at(day), days_past_due=dpd))
