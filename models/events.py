"""The event records the monitor consumes: frozen, slotted, UTC, money in minor units.

Wire names (the ``type`` field) and the JSON Schemas in ``models/schemas`` are the
published contract; this module is its typed twin inside the core.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from iso4217 import Currency

from .frozen import quick_init

__all__ = [
    "TRANSACTION_TYPES",
    "CASH_FLOW_TYPES",
    "REPAYMENT_TYPES",
    "LIFECYCLE_TYPES",
    "CONTROL_TYPES",
    "EVENT_TYPES",
    "CURRENCIES",
    "Transaction",
    "CashFlow",
    "BalanceReport",
    "InstalmentDue",
    "Payment",
    "DpdReport",
    "AccountOpened",
    "LimitChanged",
    "Review",
    "REVIEW_OUTCOMES",
    "PolicyUpdate",
    "BreakerCommand",
    "ModelCommand",
    "MODEL_COMMANDS",
    "SHADOW_COMMANDS",
    "ControlEvent",
    "Event",
    "AccountEvent",
    "CATEGORY",
    "CATEGORY_RANK",
    "event_order",
    "is_broadcast",
]

TRANSACTION_TYPES = ("drawdown", "purchase", "refund", "limit_request")
# Money moving on the current or deposit account linked to the line (they travel on the
# transactions topic): what came in, what went out, what the bank charged, and its balance.
CASH_FLOW_TYPES = ("inflow", "outflow", "charge", "balance_report")
REPAYMENT_TYPES = ("instalment_due", "payment", "dpd_report")
LIFECYCLE_TYPES = ("account_opened", "limit_changed", "review")
# What a reviewer may decide on one account: put it back to normal, set it at a state, or confirm where it is.
REVIEW_OUTCOMES = ("reinstate", "hold", "confirm")
CONTROL_TYPES = ("policy_update", "breaker_command", "model_command")
# What a shadow policy command does: judge a candidate beside the live policy, put it in force, or drop it.
SHADOW_COMMANDS = ("install", "promote", "drop")
# What a model command does: start a challenger learning and scoring in shadow, put it in force, or drop it.
MODEL_COMMANDS = ("challenge", "promote", "drop")
EVENT_TYPES = TRANSACTION_TYPES + CASH_FLOW_TYPES + REPAYMENT_TYPES + LIFECYCLE_TYPES + CONTROL_TYPES
# What each cash-flow type's ``kind`` may be ("other" when a ledger has no finer code).
CASH_FLOW_KINDS = {
    "inflow": ("salary", "pension", "benefit", "transfer", "interest", "refund", "cash", "other"),
    "outflow": ("card", "cash", "transfer", "household", "loan_payment", "other"),
    "charge": ("fee", "interest", "penalty_interest", "insurance", "other"),
}

# Each category travels on its own topic. At equal event time, events apply in
# this order (control first, so a policy in force from T governs events at T),
# and within a category in log (offset) order: replay and the stream agree on it.
CATEGORY = {
    **{t: "control" for t in CONTROL_TYPES},
    **{t: "lifecycle" for t in LIFECYCLE_TYPES},
    **{t: "transactions" for t in TRANSACTION_TYPES},
    **{t: "transactions" for t in CASH_FLOW_TYPES},
    **{t: "repayments" for t in REPAYMENT_TYPES},
}
CATEGORY_RANK = {"control": 0, "lifecycle": 1, "transactions": 2, "repayments": 3}


def event_order(ts: int, type_: str, seq: int) -> tuple[int, int, int]:
    """The order events apply in, in replay and in every partition of the stream: event time,
    then category, then position in the log (``seq``: a line number, or an offset).

    >>> event_order(5, "payment", 1) > event_order(5, "policy_update", 9) > event_order(4, "payment", 0)
    True
    """
    return (ts, CATEGORY_RANK[CATEGORY[type_]], seq)

# Every ISO 4217 currency with a minor unit, and its exponent (decimals), from the
# iso4217 package (a maintained copy of the ISO table). Amounts are kept in hundredths
# of the unit whatever the currency, so that one integer rule serves every book; an
# amount with more decimals than its currency has is refused.
CURRENCIES: dict[str, int] = {c.code: c.exponent for c in Currency if c.exponent is not None}


@quick_init
@dataclass(frozen=True, slots=True)
class Transaction:
    """A drawdown, purchase, refund or limit request on a line (amount in minor units)."""

    type: str
    event_id: str
    account_id: str
    ts: int  # event time, epoch milliseconds UTC
    amount: int
    currency: str
    channel: str
    merchant: str | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class CashFlow:
    """Money in (inflow), out (outflow) or charged (charge) on the linked current account.

    ``balance``: the account's running balance after it (minor units, negative when
    overdrawn), if the ledger gives one.
    """

    type: str
    event_id: str
    account_id: str
    ts: int
    amount: int
    currency: str
    kind: str
    balance: int | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class BalanceReport:
    """The linked current account's balance as of ``ts`` (minor units, negative when overdrawn)."""

    type: str
    event_id: str
    account_id: str
    ts: int
    balance: int
    currency: str


@quick_init
@dataclass(frozen=True, slots=True)
class InstalmentDue:
    """A statement: ``amount`` falls due at ``due_ts`` (end of the due date, UTC)."""

    type: str
    event_id: str
    account_id: str
    ts: int
    instalment_id: str
    amount: int
    currency: str
    due_ts: int


@quick_init
@dataclass(frozen=True, slots=True)
class Payment:
    """Money paid back; allocated to ``instalment_id`` first when the ledger names it, then oldest first."""

    type: str
    event_id: str
    account_id: str
    ts: int
    amount: int
    currency: str
    channel: str
    instalment_id: str | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class DpdReport:
    """The servicing ledger's ageing of an account: days past due as of ``ts``."""

    type: str
    event_id: str
    account_id: str
    ts: int
    days_past_due: int


@quick_init
@dataclass(frozen=True, slots=True)
class AccountOpened:
    """A new line with its limit, currency and static attributes."""

    type: str
    event_id: str
    account_id: str
    ts: int
    limit: int
    currency: str
    attributes: dict[str, Any] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True)
class LimitChanged:
    """The contractual limit changed (by the credit team, not by this monitor)."""

    type: str
    event_id: str
    account_id: str
    ts: int
    limit: int
    reason: str


@quick_init
@dataclass(frozen=True, slots=True)
class PolicyUpdate:
    """New policy thresholds, in force from ``ts`` (event time) on; or, with ``shadow``, a candidate policy
    judged beside the one in force without acting (``install``), put in force (``promote``) or dropped
    (``drop``): see :mod:`riskmon.models.shadow`."""

    type: str
    event_id: str
    ts: int
    policy_version: str
    thresholds: dict[str, Any]
    account_id: str = "control"
    shadow: str = ""  # "" (a live update) or one of SHADOW_COMMANDS


@quick_init
@dataclass(frozen=True, slots=True)
class BreakerCommand:
    """Release or drop the decisions a tripped breaker holds for ``action``, and re-arm it."""

    type: str
    event_id: str
    ts: int
    command: str  # "release" or "drop"
    action: str  # "closure" or "limit_reduction"
    note: str
    account_id: str = "control"


@quick_init
@dataclass(frozen=True, slots=True)
class ModelCommand:
    """Champion and challenger: start a challenger (a fresh model of ``learner``) in shadow, promote it, or drop it."""

    type: str
    event_id: str
    ts: int
    command: str  # one of MODEL_COMMANDS
    learner: str  # the challenger's learner (a challenge); "" otherwise
    note: str
    account_id: str = "control"


@quick_init
@dataclass(frozen=True, slots=True)
class Review:
    """A person's decision on one account, after looking at it: it stands over the automatic policy for a while."""

    type: str
    event_id: str
    account_id: str
    ts: int
    outcome: str  # one of REVIEW_OUTCOMES
    state: str  # the state the account is set at (reinstate: normal; confirm: where it is, read when applied)
    reviewer: str
    note: str


AccountEvent = Union[Transaction, CashFlow, BalanceReport, InstalmentDue, Payment, DpdReport, AccountOpened, LimitChanged,
                     Review]
ControlEvent = Union[PolicyUpdate, BreakerCommand, ModelCommand]
Event = Union[AccountEvent, ControlEvent]


def is_broadcast(event: Event) -> bool:
    """A control event: it applies in every shard (partition), not in the one that owns an account."""
    return isinstance(event, (PolicyUpdate, BreakerCommand, ModelCommand))
