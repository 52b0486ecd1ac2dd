"""Declared features: per-account aggregates over event-time windows, from a TOML file beside the policy.

The monitor's features are the credit-line features built in
(:data:`riskmon.models.features.BUILTINS`), chosen by name, plus what the
feature specification declares (``models/data/default_features.toml`` is the
default; ``RISKMON_FEATURES_FILE`` or ``--features`` replaces it). A
specification has a ``version`` and three lists:

- ``builtins``: the built-in features to use, by name;
- ``[[aggregate]]``: one value kept per account, updated by the events named
  in ``events`` (optionally only those whose ``kinds`` match, or whose
  ``field`` is ``at_least`` a value). ``kind`` is one of

  - ``sum``, ``count``: time-decayed over ``window_days`` (a burst reads its
    size and fades smoothly: no window edge to fall off);
  - ``min``, ``max``: over the last ``window_days`` in ``buckets`` buckets; with
    ``field = "balance"`` (the current account's) or ``"drawn"`` (the credit
    line's) the field is a level, carried across time, so the minimum balance
    over 90 days counts the days no event came;
  - ``last``: the field's latest value;
  - ``time_below``, ``time_above``: days a level (``balance``, ``drawn``, ``dpd``)
    spent below ``below`` or above ``above`` (time-decayed): days overdrawn,
    days in arrears, whatever the ledger's reporting frequency;
  - ``periods``: the share of the last ``buckets`` periods of
    ``window_days / buckets`` days with at least one such event (regularity);

  and ``transform`` says how the kept value reads as a feature: ``none``,
  ``log1p`` (of the magnitude, sign kept: balances go below zero),
  ``per_limit`` (divided by the credit limit), with an optional ``cap``;
- ``[[ratio]]``: ``num / den`` of two aggregates (raw values), ``default`` when
  the denominator is nothing, with an optional ``cap``.

Every aggregate costs O(1) time per event and a fixed few numbers of state
(``sum``/``count``/``last``/``time_below``: one; ``periods``: two; ``min``/``max``:
``buckets + 1``). Event time only: the same log gives the same features.

>>> spec = parse_spec({"version": "v1", "builtins": ["utilisation"], "aggregate": [
...     {"name": "min_balance_90d", "kind": "min", "events": ["balance_report"], "field": "balance", "window_days": 90}]},
...     "example", ("utilisation",))
>>> spec.names, spec.width
(('utilisation', 'min_balance_90d'), 4)
"""
from __future__ import annotations

import math
import tomllib
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import RejectReason, Rejected
from .events import CASH_FLOW_KINDS, EVENT_TYPES
from .units import DAY_MS
from .velocity import TAUS_MS

__all__ = ["Aggregate", "BUILTINS", "FeatureSpec", "Ratio", "default_spec", "load_spec", "parse_spec"]

# The credit line's built-in features (computed in models/features.py), with how a reason code says each.
BUILTINS = {
    "utilisation": "utilisation of the limit",
    "dpd_months": "days past due",
    "max_dpd_months": "worst days past due",
    "in_arrears": "being in arrears",
    "arrears_over_30": "arrears over 30 days",
    "late_payments": "late payments",
    "missed_instalments": "missed instalments",
    "partial_payments": "partial payments",
    "on_time_payments": "few on-time payments",
    "on_time_streak": "a short on-time streak",
    "payment_to_due": "a low payment-to-due ratio",
    "months_since_on_time": "time since the last on-time payment",
    "drawdowns_1h": "drawdowns in the last hour",
    "drawdowns_24h": "drawdowns in the last day",
    "drawdowns_30d": "drawdowns in the last month",
    "limit_requests_24h": "limit requests in the last day",
    "limit_requests_30d": "limit requests in the last month",
    "drawdown_amount_to_limit": "amount drawn this month against the limit",
    "unpaid_due_to_limit": "unpaid amount due against the limit",
    "account_age_months": "a young account",
    "repaid_share_30d": "little of the balance repaid this month",
    "on_time_share": "a low share of instalments met on time",
    "linked_account": "the linked current account",
    "limit_size": "a small credit limit",
}

KINDS = ("sum", "count", "min", "max", "last", "time_below", "time_above", "periods")
TRANSFORMS = ("none", "log1p", "per_limit")
# The numeric fields an aggregate may read, and the events that carry them.
# amount, days_past_due: the event's own; balance: the linked current account's (a level);
# drawn: what is drawn on the credit line after the event (a level); dpd: the line's days past due (a level).
FIELDS = ("amount", "balance", "days_past_due", "drawn", "dpd")


@dataclass(frozen=True, slots=True)
class Aggregate:
    name: str
    kind: str
    events: frozenset[str]
    field: str | None
    kinds: frozenset[str] | None
    at_least: float | None
    window_ms: float
    buckets: int
    below: float  # the line a time_below (or time_above) aggregate counts from
    transform: str
    cap: float | None
    offset: int  # where its state starts in the account's aggregate list
    text: str  # how a reason code says it ("... raised the risk score")

    @property
    def size(self) -> int:
        return self.buckets + 1 if self.kind in ("min", "max") else 2 if self.kind == "periods" else 1

    @property
    def level(self) -> bool:
        """A level that holds between events (a balance), not a value that happens at one."""
        return self.field in ("balance", "drawn", "dpd")

    @property
    def timed(self) -> bool:
        """Counts time a level spends past a line: fed by :meth:`FeatureSpec.advance`, whatever the event."""
        return self.kind in ("time_below", "time_above")

    @property
    def decays(self) -> bool:
        """Its value fades with event time (``window_ms`` is its time constant)."""
        return self.kind in ("sum", "count") or self.timed

    @property
    def follows_level(self) -> bool:
        """The min or max of a level: updated whenever the level moves, whatever event moved it."""
        return self.level and self.kind in ("min", "max")


@dataclass(frozen=True, slots=True)
class Ratio:
    name: str
    num: str
    den: str
    default: float
    cap: float | None
    text: str


@dataclass(frozen=True)
class FeatureSpec:
    version: str
    builtins: tuple[str, ...]
    aggregates: tuple[Aggregate, ...]
    ratios: tuple[Ratio, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_template", self._empty())
        self._compile()
        layout = ";".join(f"{a.name}:{a.kind}:{a.size}:{a.field}:{a.window_ms}:{a.buckets}" for a in self.aggregates)
        object.__setattr__(self, "_fingerprint", zlib.crc32(layout.encode()))
        # One tuple for the life of the spec: the model caches its weights by the names' identity.
        object.__setattr__(self, "_names", self.builtins + tuple(a.name for a in self.aggregates) + tuple(r.name for r in self.ratios))

    @property
    def fingerprint(self) -> int:
        """Identifies the layout of the aggregates in an account's state (a state under another starts afresh)."""
        return self._fingerprint  # type: ignore[attr-defined, no-any-return]

    @property
    def names(self) -> tuple[str, ...]:
        """Every feature's name, in the vector's order: the built-ins, the aggregates, the ratios."""
        return self._names  # type: ignore[attr-defined, no-any-return]

    @property
    def texts(self) -> dict[str, str]:
        """How reason codes say the declared features."""
        return {**{a.name: a.text for a in self.aggregates}, **{r.name: r.text for r in self.ratios}}

    @property
    def width(self) -> int:
        return sum(a.size for a in self.aggregates)

    def new_state(self) -> list[Any]:
        """The aggregates of an account that has seen nothing (a copy of one list built once)."""
        return list(self._template)  # type: ignore[attr-defined]

    def _empty(self) -> list[Any]:
        out: list[Any] = []
        for a in self.aggregates:
            if a.kind in ("min", "max"):
                out += [None] * (a.buckets + 1)
            elif a.kind == "periods":
                out += [None, 0]
            elif a.kind == "last":
                out.append(None)
            else:
                out.append(0.0)
        return out

    # -- updates ----------------------------------------------------------------
    # Generated from the spec, like the reader (see source()): they run on every event.
    def advance(self, agg: list[Any], counters: list[float], elapsed_ms: int, balance: float | None, drawn: float,
                dpd: float) -> None:
        """The account clock moved on by ``elapsed_ms``: decay the aggregates and the built-in velocity
        ``counters`` (:mod:`riskmon.models.velocity`), and count the time levels spent below or above a line.

        >>> from riskmon.models.velocity import COUNTERS
        >>> from riskmon.models.units import HOUR_MS
        >>> spec, v = default_spec(), [2.0] + [0.0] * (len(COUNTERS) - 1)
        >>> spec.advance(spec.new_state(), v, HOUR_MS, None, 0, 0); round(v[0], 4)
        0.7358
        """
        self._advance(agg, counters, elapsed_ms, balance, drawn, dpd)  # type: ignore[attr-defined]

    def observe(self, agg: list[Any], event: Any, now: int, before: float | None, after: float | None,
                drawn_before: float, drawn_after: float) -> None:
        """Apply one event to the aggregates that take it.

        ``before``, ``after``: the linked account's balance before and after it (None: not known);
        ``drawn_before``, ``drawn_after``: the credit line's. The minimum and maximum of a level
        follow it whatever event moved it (between moves, reading counts the level held).
        """
        observers = self._observers  # type: ignore[attr-defined]
        observers.get(event.type, observers[None])(agg, event, now, before, after, drawn_before, drawn_after)

    def _compile(self) -> None:
        """Build :meth:`values`, :meth:`advance` and :meth:`observe`'s code from the spec."""
        lines, env, out = self.source()
        code = ["def values(agg, now, limit, balance, drawn):", *lines, "    return [" + ", ".join(out) + "]"]
        env = {**env, "exp": math.exp, "expm1": math.expm1, "_bucket_update": _bucket_update, "_set_period": _set_period}
        for i, a in enumerate(self.aggregates):
            env[f"A{i}"] = a
            if a.kinds is not None:
                env[f"K{i}"] = a.kinds
        code += self._advance_source()
        types: list[str | None] = [None, *sorted({t for a in self.aggregates for t in a.events})]
        for t in types:
            code += [f"def observe_{t}(agg, event, now, before, after, drawn_before, drawn_after):", "    pass"]
            for i, a in enumerate(self.aggregates):
                if t in a.events and not (a.timed or a.follows_level):
                    code += self._observe_source(i, a, t)
            for i, a in enumerate(self.aggregates):
                if a.follows_level and a.field == "balance":
                    code.append("    if after is not None and after != before:")
                    code += self._level_source(i, a, "after", "before")
                elif a.follows_level:
                    code.append("    if drawn_after != drawn_before:")
                    code += self._level_source(i, a, "drawn_after", "drawn_before")
        exec("\n".join(code), env)  # noqa: S102 - source built from names checked to be identifiers
        object.__setattr__(self, "_reader", env["values"])
        object.__setattr__(self, "_advance", env["advance"])
        object.__setattr__(self, "_observers", {t: env[f"observe_{t}"] for t in types})

    def _advance_source(self) -> list[str]:
        # One exponential per time constant, shared by the aggregates and the velocity counters that have it.
        code = ["def advance(agg, counters, elapsed_ms, balance, drawn, dpd):", "    if elapsed_ms <= 0: return"]

        def fade(slot: str, still: str) -> None:  # 0 stays 0; a value that is no longer ``still`` becomes 0
            code.extend([f"    v = {slot}", "    if v:", "        v = v * f", f"        {slot} = v if {still} else 0.0"])

        for tau in sorted({float(t) for t in TAUS_MS} | {a.window_ms for a in self.aggregates if a.decays}):
            code.append(f"    f = exp(-elapsed_ms / {tau!r})")
            for i, t in enumerate(TAUS_MS):
                if t == tau:
                    fade(f"counters[{i}]", "v > 1e-6")
            for a in self.aggregates:
                if a.window_ms == tau and a.decays:  # an aggregate may be negative
                    fade(f"agg[{a.offset}]", "v > 1e-9 or v < -1e-9")
        for a in self.aggregates:
            if a.timed:
                cmp = f"< {a.below!r}" if a.kind == "time_below" else f"> {a.below!r}"
                # The decayed days of the whole interval (not its length, decayed as one lump): an account
                # past the line throughout reads the same however often events come.
                code.append(f"    if {a.field} is not None and {a.field} {cmp}:")
                code.append(f"        agg[{a.offset}] += {a.window_ms!r} * -expm1(-elapsed_ms / {a.window_ms!r}) / {DAY_MS}")
        return code

    @staticmethod
    def _level_source(i: int, a: Aggregate, x: str, carry: str) -> list[str]:
        """A level's min or max taking ``x``: in the newest bucket, written out (most moves land there; this
        runs on every event that moves a balance); else :func:`_bucket_update`, which starts new buckets."""
        o, b, cmp = a.offset, a.buckets, "<" if a.kind == "min" else ">"
        return [f"        k = int(now // {a.window_ms / b!r})",
                f"        if k == agg[{o}]:",
                f"            k = {o + 1} + k % {b}; v = agg[k]",
                f"            if v is None or {x} {cmp} v: agg[k] = {x}",  # (min() and max() keep v when equal, as this does)
                "        else:",
                f"            _bucket_update(agg, A{i}, now, {x}, {carry})"]

    @staticmethod
    def _observe_source(i: int, a: Aggregate, t: str) -> list[str]:
        """One aggregate's update on an event of type ``t`` (not a level's min or max, nor a time count)."""
        x = ("1.0" if a.field is None else "after" if a.field == "balance" else "drawn_after" if a.field == "drawn"
             else f"getattr(event, {a.field!r}, None)")
        tests = [] if x == "1.0" else ["x is not None"]
        if a.kinds is not None:
            tests.append(f"event.kind in K{i}" if t in CASH_FLOW_KINDS else "False")
        if a.at_least is not None:
            tests.append(f"x >= {a.at_least!r}")
        test = f"    if {' and '.join(tests) or 'True'}:"
        if a.kind == "periods":  # this period's bit: written out when the newest period is this one, as it mostly is
            o = a.offset
            return [f"    x = {x}", test, f"        k = int(now // {a.window_ms / a.buckets!r})",
                    f"        if k == agg[{o}]: agg[{o + 1}] = int(agg[{o + 1}]) | 1",
                    f"        else: _set_period(agg, {o}, A{i}, now)"]
        update = {"sum": f"agg[{a.offset}] += x", "count": f"agg[{a.offset}] += 1.0",
                  "last": f"agg[{a.offset}] = x"}.get(a.kind, f"_bucket_update(agg, A{i}, now, x, None)")
        return [f"    x = {x}", f"{test} {update}"]

    # -- reading --------------------------------------------------------------------
    def values(self, agg: list[Any], now: int, limit: int, balance: float | None, drawn: float) -> list[float]:
        """The declared features' values at the account clock ``now``, in the order of their names
        (after the built-ins in :attr:`names`)."""
        return self._reader(agg, now, limit, balance, drawn)  # type: ignore[attr-defined, no-any-return]

    def source(self) -> tuple[list[str], dict[str, Any], list[str]]:
        """Straight-line code that reads the declared features, generated from the (validated) spec.

        Returns (lines, globals they need, the names of the values in feature order). The lines read
        the locals ``agg``, ``now``, ``limit``, ``balance`` and ``drawn`` (as :meth:`values` takes them)
        and are indented for a function body. It runs on every event: a loop over the aggregates with a
        branch per kind and transform, calling a reader per bucketed aggregate, cost three times as much.
        """
        lines: list[str] = []
        env: dict[str, Any] = {"log1p": math.log1p, "min": min, "max": max}
        out = []

        def clip(var: str, cap: float | None) -> None:
            if cap is not None:
                lines.append(f"    if {var} > {cap!r}: {var} = {cap!r}")
                lines.append(f"    elif {var} < {-cap!r}: {var} = {-cap!r}")

        # The bucket (or period) index of ``now`` for each width in use, worked out once per read.
        period: dict[float, str] = {}
        for a in self.aggregates:
            if a.kind in ("min", "max", "periods") and a.window_ms / a.buckets not in period:
                period[a.window_ms / a.buckets] = p = f"k{len(period)}"
                lines.append(f"    {p} = int(now // {a.window_ms / a.buckets!r})")
        for i, a in enumerate(self.aggregates):
            o = a.offset
            r = f"r{i}"
            if a.decays:
                lines.append(f"    {r} = agg[{o}]")
            elif a.kind == "last":
                lines.append(f"    {r} = agg[{o}]")
                lines.append(f"    if {r} is None: {r} = 0.0")
            elif a.kind == "periods":  # the share of the last `buckets` periods whose bit is set
                width, b = a.window_ms / a.buckets, a.buckets
                lines.append(f"    {r} = agg[{o}]")
                lines.append(f"    if {r} is not None:")
                lines.append(f"        {r} = {period[width]} - int({r})")
                lines.append(f"        {r} = 0.0 if {r} >= {b} else ((int(agg[{o + 1}]) << {r}) & {(1 << b) - 1}).bit_count() / {b}")
                lines.append("    else:")
                lines.append(f"        {r} = 0.0")
            else:  # min or max over the buckets still in the window, and the level held now
                b, cmp = a.buckets, "<" if a.kind == "min" else ">"
                lines.append(f"    {r} = {a.field if a.level else 'None'}")
                lines.append(f"    n = agg[{o}]")
                lines.append("    if n is not None:")
                lines.append(f"        n = int(n); k = {period[a.window_ms / b]}")
                # Most reads fall in the newest bucket with every bucket filled: all are in the window.
                lines.append(f"        if k == n and None not in (x := agg[{o + 1}:{o + 1 + b}]):")
                lines.append(f"            x = {a.kind}(x)")
                lines.append(f"            if {r} is None or x {cmp} {r}: {r} = x")
                lines.append("        else:")
                lines.append(f"            k -= {b - 1}")
                lines.append(f"            if k < n - {b - 1}: k = n - {b - 1}")
                lines.append("            while k <= n:")
                lines.append(f"                x = agg[{o + 1} + k % {b}]; k += 1")
                lines.append(f"                if x is not None and ({r} is None or x {cmp} {r}): {r} = x")
                lines.append(f"    if {r} is None: {r} = 0.0")
            v = f"v{i}"
            if a.transform == "log1p":
                lines.append(f"    {v} = log1p({r}) if {r} >= 0 else -log1p(-{r})")
            elif a.transform == "per_limit":
                lines.append(f"    {v} = {r} / limit if limit > 0 else 0.0")
            else:
                lines.append(f"    {v} = {r}")
            clip(v, a.cap)
            out.append(v)
        index = {a.name: i for i, a in enumerate(self.aggregates)}
        for k, q in enumerate(self.ratios):
            n, d, v = f"r{index[q.num]}", f"r{index[q.den]}", f"q{k}"
            lines.append(f"    {v} = {n} / {d} if ({d} > 1e-9 or {d} < -1e-9) else {q.default!r}")
            clip(v, q.cap)
            out.append(v)
        return lines, env, out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("_reader", "_advance", "_observers", "_vector"):
            state.pop(name, None)  # generated code (_vector: features.vector's) does not pickle; rebuilt on use
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._compile()


def _bucket_update(agg: list[Any], a: Aggregate, now: int, x: float, carry: float | None) -> None:
    """Put ``x`` in the bucket of ``now``; new buckets start empty, or at ``carry`` (a level held into them)."""
    width = a.window_ms / a.buckets
    b = int(now // width)
    o = a.offset
    newest = agg[o]
    if newest is None or b > newest:
        start = b - a.buckets + 1 if newest is None else max(int(newest) + 1, b - a.buckets + 1)
        for k in range(start, b + 1):
            # A level held through the buckets since the last one; never guessed before the first.
            agg[o + 1 + k % a.buckets] = carry if (newest is not None or k == b) else None
        agg[o] = b
    elif b <= newest - a.buckets:
        return  # older than the window (the account clock never runs back, but be safe)
    slot = o + 1 + b % a.buckets
    cur = agg[slot]
    if cur is None:
        agg[slot] = x
    elif a.kind == "min":
        agg[slot] = min(cur, x)
    else:
        agg[slot] = max(cur, x)


def _set_period(agg: list[Any], o: int, a: Aggregate, now: int) -> None:
    p = int(now // (a.window_ms / a.buckets))
    newest = agg[o]
    mask = int(agg[o + 1])
    if newest is None or p > newest:
        shift = a.buckets if newest is None else min(p - int(newest), a.buckets)
        mask = (mask << shift) & ((1 << a.buckets) - 1)
        agg[o] = p
        newest = p
    if p > int(newest) - a.buckets:
        mask |= 1 << (int(newest) - p)
    agg[o + 1] = mask


# -- loading -----------------------------------------------------------------------
def _spec_error(where: str, text: str) -> Rejected:
    return Rejected(RejectReason.BAD_POLICY, f"{where}: {text}")


def _named(item: dict[str, Any], where: str, seen: set[str]) -> tuple[str, str]:
    """(where, name) of a declared feature, its name checked unique and not a built-in's, and noted as seen."""
    w = f"{where} ({str(item.get('name', '?'))[:40]})"
    name = item.get("name")
    if not isinstance(name, str) or not name.isidentifier() or name in seen:
        raise _spec_error(w, "needs a unique name (letters, digits, _), not a built-in feature's")
    seen.add(name)
    return w, name


def parse_spec(doc: dict[str, Any], where: str, builtin_names: tuple[str, ...]) -> FeatureSpec:
    """A specification from its TOML document; :class:`Rejected` (bad_policy) naming what is wrong."""
    version = doc.get("version")
    if not isinstance(version, str) or not version:
        raise _spec_error(where, "a feature specification needs a top-level version string")
    builtins = doc.get("builtins", [])
    if not isinstance(builtins, list) or any(not isinstance(b, str) or b not in builtin_names for b in builtins):
        unknown = [b for b in builtins if b not in builtin_names] if isinstance(builtins, list) else builtins
        raise _spec_error(where, f"unknown built-in features {unknown!r}; known: {', '.join(builtin_names)}")
    if len(set(builtins)) != len(builtins):
        raise _spec_error(where, "a built-in feature is named twice")
    aggs: list[Aggregate] = []
    offset = 0
    seen = set(builtin_names)  # no declared feature may take a built-in's name (nor its expert weight)
    tables = {k: doc.get(k, []) for k in ("aggregate", "ratio")}
    for k, items in tables.items():
        if not isinstance(items, list) or any(not isinstance(item, dict) for item in items):
            raise _spec_error(where, f"{k} must be a list of tables ([[{k}]])")
    for i, item in enumerate(tables["aggregate"]):
        w, name = _named(item, f"{where}: aggregate {i + 1}", seen)
        kind = item.get("kind")
        if kind not in KINDS:
            raise _spec_error(w, f"kind must be one of {', '.join(KINDS)}")
        events = item.get("events", [])
        if not events or not isinstance(events, list) or any(e not in EVENT_TYPES for e in events):
            raise _spec_error(w, f"events must name event types ({', '.join(EVENT_TYPES)})")
        field = item.get("field")
        if kind in ("time_below", "time_above") and field not in ("balance", "drawn", "dpd"):
            raise _spec_error(w, f"a {kind} needs a level field: balance, drawn or dpd")
        if kind in ("sum", "min", "max", "last") and field not in FIELDS:
            raise _spec_error(w, f"a {kind} needs a field: one of {', '.join(FIELDS)}")
        if field is not None and field not in FIELDS:
            raise _spec_error(w, f"field must be one of {', '.join(FIELDS)}")
        if field == "dpd" and kind not in ("time_below", "time_above"):
            raise _spec_error(w, "dpd (the line's days past due) is read by time_above and time_below only; "
                                 "the ledger's reports are field days_past_due")
        kinds = item.get("kinds")
        if kinds is not None:
            allowed = {k for e in events for k in CASH_FLOW_KINDS.get(e, ())}
            if not isinstance(kinds, list) or not kinds or any(not isinstance(k, str) or k not in allowed for k in kinds):
                raise _spec_error(w, f"kinds must be cash-flow kinds of its events ({', '.join(sorted(allowed))})")
        window = item.get("window_days", 30)
        buckets = item.get("buckets", 3 if kind in ("min", "max") else 6 if kind == "periods" else 1)
        transform = item.get("transform", "none")
        cap = item.get("cap")
        at_least = item.get("at_least")
        if not isinstance(window, (int, float)) or isinstance(window, bool) or not 0 < window <= 3650:
            raise _spec_error(w, "window_days must be a number of days in (0, 3650]")
        if not isinstance(buckets, int) or isinstance(buckets, bool) or not 1 <= buckets <= 24:
            raise _spec_error(w, "buckets must be an integer 1..24")
        if transform not in TRANSFORMS:
            raise _spec_error(w, f"transform must be one of {', '.join(TRANSFORMS)}")
        line = item.get("above" if kind == "time_above" else "below", 0)
        for label, v in (("cap", cap), ("at_least", at_least), ("below/above", line)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise _spec_error(w, f"{label} must be a finite number")
        if cap is not None and cap <= 0:
            raise _spec_error(w, "cap must be positive")
        unknown = set(item) - {"name", "kind", "events", "field", "kinds", "window_days", "buckets", "transform", "cap",
                               "at_least", "below", "above", "text"}
        if unknown:
            raise _spec_error(w, f"unknown keys {sorted(unknown)}")
        a = Aggregate(name, kind, frozenset(events), field, None if kinds is None else frozenset(kinds),
                      None if at_least is None else float(at_least), float(window) * DAY_MS, buckets,
                      float(line), transform, None if cap is None else float(cap), offset,
                      str(item.get("text", name.replace("_", " "))))
        offset += a.size
        aggs.append(a)
    names = {a.name for a in aggs}
    ratios = []
    for i, item in enumerate(tables["ratio"]):
        w, name = _named(item, f"{where}: ratio {i + 1}", seen)
        if item.get("num") not in names or item.get("den") not in names:
            raise _spec_error(w, "num and den must name aggregates")
        unknown = set(item) - {"name", "num", "den", "default", "cap", "text"}
        if unknown:
            raise _spec_error(w, f"unknown keys {sorted(unknown)}")
        default, cap = item.get("default", 0.0), item.get("cap")
        for label, v in (("default", default), ("cap", cap)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise _spec_error(w, f"{label} must be a finite number")
        if cap is not None and cap <= 0:
            raise _spec_error(w, "cap must be positive")
        ratios.append(Ratio(name, item["num"], item["den"], float(default), None if cap is None else float(cap),
                            str(item.get("text", name.replace("_", " ")))))
    unknown = set(doc) - {"version", "builtins", "aggregate", "ratio"}
    if unknown:
        raise _spec_error(where, f"unknown keys {sorted(unknown)}")
    return FeatureSpec(version, tuple(builtins), tuple(aggs), tuple(ratios))


def load_spec(path: str | Path) -> FeatureSpec:
    """A feature specification from a TOML file; :class:`Rejected` (bad_policy) naming what is wrong."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise Rejected(RejectReason.BAD_POLICY, f"{path}: {exc}") from None
    return parse_spec(doc, str(path), tuple(BUILTINS))


def _load_default() -> FeatureSpec:
    text = resources.files(__package__ or "riskmon.models").joinpath("data/default_features.toml").read_text("utf-8")
    return parse_spec(tomllib.loads(text), "default_features.toml", tuple(BUILTINS))


_DEFAULT = _load_default()


def default_spec() -> FeatureSpec:
    """The shipped specification (``models/data/default_features.toml``)."""
    return _DEFAULT


