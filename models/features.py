"""The model's view of an account: named features, built in and declared.

The built-in credit-line features (:data:`BUILTINS`) are computed here; the
feature specification (``models/data/default_features.toml``, see
:mod:`riskmon.models.featurespec`) chooses which of them the model sees and
declares the windowed aggregates beside them.

A vector kept for delayed learning (at a statement) is rounded to 4 decimals
to keep the state small, and that rounded vector is the one scored, so the
model later learns on exactly what it scored.
"""
from __future__ import annotations

from collections.abc import Callable
from math import log1p

from .featurespec import BUILTINS, FeatureSpec, default_spec, load_spec
from .state import I_AMOUNT, I_DUE_TS, I_PAID, AccountState
from .units import MONTH_MS
from .velocity import INDEX

__all__ = ["BUILTINS", "FEATURE_NAMES", "FEATURE_TEXT", "default_spec", "features", "load_spec", "rounded",
           "vector"]


_I_DD1, _I_DD24, _I_DD30 = INDEX["drawdowns_1h"], INDEX["drawdowns_24h"], INDEX["drawdowns_30d"]
_I_LR24, _I_LR30 = INDEX["limit_requests_24h"], INDEX["limit_requests_30d"]
_I_AMT, _I_DUE, _I_PAID = INDEX["drawdown_amount_30d"], INDEX["due_90d"], INDEX["paid_90d"]
_I_PAID30 = INDEX["paid_30d"]
_MONTH = MONTH_MS
_ALL = tuple(BUILTINS)


# Each built-in feature as an expression over the locals _PRELUDE sets from the account state ``s``
# (in BUILTINS order, asserted below). The prelude and the expressions run on every event.
_PRELUDE = f"""\
    agg = s["a"]; now = s["ts"]; limit = s["limit"]; balance = s["cb"]; drawn = bal = s["bal"]
    lim1 = limit if limit > 1 else 1
    v = s["v"]
    unpaid = 0
    for inst in s["inst"]:
        if inst[{I_DUE_TS}] <= now:
            unpaid += inst[{I_AMOUNT}] - inst[{I_PAID}]
    due = v[{_I_DUE}]
    met = s["on_time"]; late = s["late"]; missed = s["missed"]
    fell_due = met + late + missed  # nothing has fallen due yet: no time counts as "since on time"
    dpd = s["dpd"]; max_dpd = s["max_dpd"]; streak = s["streak"]
    util = bal / lim1
    paid30 = v[{_I_PAID30}]"""
_EXPRESSIONS = {
    "utilisation": "util if util < 2.0 else 2.0",
    "dpd_months": "dpd / 30 if dpd < 180 else 6.0",
    "max_dpd_months": "max_dpd / 30 if max_dpd < 180 else 6.0",
    "in_arrears": "1.0 if dpd > 0 else 0.0",
    "arrears_over_30": "1.0 if dpd > 30 else 0.0",
    "late_payments": "log1p(late)",
    "missed_instalments": "log1p(missed)",
    "partial_payments": 'log1p(s["partial"])',
    "on_time_payments": "log1p(met)",
    "on_time_streak": "(streak if streak < 12 else 12) / 12",
    "payment_to_due": f"min(v[{_I_PAID}] / due, 2.0) if due > 1.0 else 1.0",
    "months_since_on_time": f'min((now - s["last_ok"]) / {_MONTH}, 12.0) if fell_due else 0.0',
    "drawdowns_1h": f"log1p(v[{_I_DD1}])",
    "drawdowns_24h": f"log1p(v[{_I_DD24}])",
    "drawdowns_30d": f"log1p(v[{_I_DD30}])",
    "limit_requests_24h": f"log1p(v[{_I_LR24}])",
    "limit_requests_30d": f"log1p(v[{_I_LR30}])",
    "drawdown_amount_to_limit": f"min(v[{_I_AMT}] / lim1, 5.0)",
    "unpaid_due_to_limit": "min(unpaid / lim1, 2.0)",
    "account_age_months": f'min((now - s["opened"]) / {_MONTH}, 24.0)',
    # Of what was owed a month ago (now drawn + since repaid), the share repaid.
    "repaid_share_30d": "paid30 / (bal + paid30) if bal + paid30 > 100 else 1.0",
    "on_time_share": "met / fell_due if fell_due else 1.0",
    "linked_account": "0.0 if balance is None else 1.0",
    # The lender's own judgement when it set the limit (log of units of the currency).
    "limit_size": "log1p(limit / 100)",
}
assert tuple(_EXPRESSIONS) == _ALL


def _compile(spec: FeatureSpec) -> Callable[[AccountState], list[float]]:
    """One straight-line function from an account state to ``spec``'s vector: the built-ins and the
    declared features in one pass, with no dict or list between them."""
    lines, env, out = spec.source()
    body = ["def vector(s):", _PRELUDE, *lines,
            "    return [" + ", ".join([*(f"({_EXPRESSIONS[n]})" for n in spec.builtins), *out]) + "]"]
    env = {**env, "log1p": log1p}
    exec("\n".join(body), env)  # noqa: S102 - source built from the tables above and a validated spec
    fn: Callable[[AccountState], list[float]] = env["vector"]
    # Kept on the spec with its other generated code (and dropped with it when the spec is pickled).
    object.__setattr__(spec, "_vector", fn)
    return fn


def vector(s: AccountState, spec: FeatureSpec) -> list[float]:
    """The values of ``spec.names`` for ``s``, in that order: what the model scores."""
    fn = spec.__dict__.get("_vector")
    return (fn if fn is not None else _compile(spec))(s)


def features(s: AccountState, spec: FeatureSpec | None = None) -> dict[str, float]:
    """The features ``spec`` declares (the default specification's if None), by name, in ``spec.names`` order.

    >>> from riskmon.models.state import new_state
    >>> x = features(new_state("a1", "CNY", 0, 500_000))
    >>> tuple(x) == FEATURE_NAMES, x["utilisation"], x["payment_to_due"], x["min_balance_90d"]
    (True, 0.0, 1.0, 0.0)
    """
    spec = spec or default_spec()
    return dict(zip(spec.names, vector(s, spec)))


def rounded(x: list[float]) -> list[float]:
    """The vector as it is kept in the state: 4 decimals, and whole numbers as integers (``0`` is
    three bytes shorter than ``0.0`` in JSON, and most features of most accounts are 0).

    >>> rounded([0.123456, 2.0, -0.0])
    [0.1235, 2, 0]
    """
    out: list[float] = []
    for f in x:
        if not f:
            out.append(0)  # the common case, and round() is slow: this runs for every feature at every statement
        else:
            r = round(f, 4)
            out.append(int(r) if isinstance(r, float) and r.is_integer() else r)
    return out


FEATURE_NAMES = default_spec().names
FEATURE_TEXT = {**BUILTINS, **default_spec().texts}
