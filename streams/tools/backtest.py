"""`riskmon backtest LOG --policy A.toml --policy B.toml`: what each policy would have done, side by side.

The same log is replayed once per policy, through the same core as replay and the stream. One
pass cannot serve every policy: the policy moves a line's state (its status, the limit in force,
the breaker's holds), the state feeds the features the model scores, and so the scores and the
outcomes the model learns from diverge from the first decision the policies disagree on.

Against the outcomes (the log's own: an account is bad from its first statement ``bad_dpd``
days past due; or a truth file's defaults), strictly before each account's outcome:
closures (precision, recall, the share of good accounts closed), warned shares of bad and
good accounts, the lead time from the first warning; and over the whole log, decisions by
action, accounts that were ever warned, limit-cut, frozen or closed, and reopenings. Then the
accounts whose final state differs from the first policy's, with both last decisions' reasons.
"""
from __future__ import annotations

import html
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from riskmon.models.portfolio import PORTFOLIO_BY_DEFAULT
from riskmon.models.codec import format_ts
from riskmon.models.featurespec import FeatureSpec
from riskmon.models.policy import Policy
from riskmon.models.risk_model import RiskModel
from riskmon.models.step import StepResult
from riskmon.models.vocabulary import SEVERITY, STATES

from ..replay import replay
from .evaluate import Judge, lead_days

__all__ = ["PolicyRun", "backtest", "count_differences", "differences", "format_backtest", "render_backtest_html"]

_EVER = [(s.name, i) for i, s in enumerate(STATES) if i > 0]  # watch and worse, by severity


@dataclass
class PolicyRun:
    """One policy's replay of the log, judged."""

    name: str  # the policy's version, or the file it came from
    decisions: Counter[str]
    ever: dict[str, int]  # state -> accounts that were ever in it or worse
    reopened: int  # accounts reopened at least once
    accounts: int
    bad: int
    closed_bad: int  # closed before their outcome
    closed_good: int  # closed at any time, never bad
    warned_bad: float
    warned_good: float
    lead: dict[str, float] | None
    final: dict[str, tuple[str, str]] = field(default_factory=dict)  # account -> (final state, last decision's reasons)

    @property
    def closure_precision(self) -> float | None:
        closed = self.closed_bad + self.closed_good
        return self.closed_bad / closed if closed else None

    @property
    def closure_recall(self) -> float | None:
        return self.closed_bad / self.bad if self.bad else None

    @property
    def false_closure_rate(self) -> float | None:
        good = self.accounts - self.bad
        return self.closed_good / good if good else None


class _Watcher(Judge):
    """The evaluation's judge, plus every decision and each account's final state and reasons."""

    def __init__(self, truth: list[dict[str, Any]] | None, bad_dpd: int) -> None:
        super().__init__(truth, bad_dpd)
        self.decisions: Counter[str] = Counter()
        self.worst_ever: dict[str, int] = {}
        self.reopened: set[str] = set()
        self.final: dict[str, tuple[str, str]] = {}

    def observe(self, ts: int, r: StepResult) -> None:
        super().observe(ts, r)
        s = r.state
        aid = s["id"]
        sev = SEVERITY[s["status"]]
        if sev > self.worst_ever.get(aid, 0):
            self.worst_ever[aid] = sev
        for d in r.decisions:
            self.decisions[d.action] += 1
            if d.action == "reopen":
                self.reopened.add(aid)
            why = "; ".join(f"{x.code}: {x.text}" for x in d.reasons[:3])
            # The account's own status, not the decision's new_state: a held move's is where it would have gone.
            self.final[aid] = (s["status"], f"{d.action} at {format_ts(d.event_ts)}: {why}")
        if aid not in self.final:
            self.final[aid] = (s["status"], "")


def _run(path: str | Path, name: str, policy: Policy | None, truth: list[dict[str, Any]] | None, partitions: int,
         spec: FeatureSpec | None, bad_dpd: int, progress: bool, model: RiskModel | None, model_base: str,
         portfolio: bool = PORTFOLIO_BY_DEFAULT) -> PolicyRun:
    w = _Watcher(truth, bad_dpd)
    with open(os.devnull, "wb") as sink:
        replay(path, sink, partitions=partitions, policy=policy, bad_dpd=bad_dpd, collector=w, spec=spec,
               progress=progress, model=model, model_base=model_base, portfolio=portfolio)
    accounts, bad = w.judged()
    t = w.tracker
    closed = {a for a in accounts if t.worst_state.get(a, 0) >= SEVERITY["closed"]}
    warned = {a for a in accounts if t.worst_state.get(a, 0) >= 1}
    good = len(accounts) - len(bad)
    return PolicyRun(
        name=name, decisions=w.decisions,
        ever={state: sum(1 for v in w.worst_ever.values() if v >= sev) for state, sev in _EVER},
        reopened=len(w.reopened), accounts=len(accounts), bad=len(bad), closed_bad=len(closed & bad),
        closed_good=len(closed - bad), warned_bad=len(warned & bad) / len(bad) if bad else 0.0,
        warned_good=len(warned - bad) / good if good else 0.0, lead=lead_days(t, bad),
        final={a: w.final[a] for a in w.final},
    )


def backtest(path: str | Path, policies: list[tuple[str, Policy | None]], truth: list[dict[str, Any]] | None = None,
             partitions: int = 4, spec: FeatureSpec | None = None, bad_dpd: int = 30,
             progress: bool = False, model: RiskModel | None = None, model_base: str = "",
             portfolio: bool = PORTFOLIO_BY_DEFAULT) -> list[PolicyRun]:
    """Replay ``path`` under each (name, policy) (None: the shipped default) and judge each run
    (``model``: every run starts from it, a warm start; ``portfolio``: one model for the portfolio)."""
    return [_run(path, name, p, truth, partitions, spec, bad_dpd, progress, model, model_base, portfolio)
            for name, p in policies]


def _rows(runs: list[PolicyRun]) -> list[tuple[str, list[str]]]:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1%}"

    def f3(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    actions = sorted({a for r in runs for a in r.decisions})
    rows = [(f"decisions: {a}", [f"{r.decisions.get(a, 0):,}" for r in runs]) for a in actions]
    rows += [(f"accounts ever {state} or worse", [f"{r.ever[state]:,}" for r in runs]) for state, _ in _EVER]
    rows += [
        ("accounts reopened", [f"{r.reopened:,}" for r in runs]),
        ("accounts judged (bad)", [f"{r.accounts:,} ({r.bad:,})" for r in runs]),
        ("closed before the outcome: bad accounts", [f"{r.closed_bad:,}" for r in runs]),
        ("closed, never bad (false closures)", [f"{r.closed_good:,}" for r in runs]),
        ("closure precision", [f3(r.closure_precision) for r in runs]),
        ("closure recall", [f3(r.closure_recall) for r in runs]),
        ("false-closure rate (of good accounts)", [pct(r.false_closure_rate) for r in runs]),
        ("bad accounts warned (or worse) before the outcome", [pct(r.warned_bad) for r in runs]),
        ("good accounts warned (or worse)", [pct(r.warned_good) for r in runs]),
        ("median lead, first warning to outcome (days)",
         ["n/a" if r.lead is None else f"{r.lead['median']:.0f}" for r in runs]),
    ]
    return rows


def differences(runs: list[PolicyRun], most: int = 20) -> list[tuple[str, list[tuple[str, str]]]]:
    """Accounts whose final state under some policy differs from the first's: (account, [(state, why)] per policy)."""
    if len(runs) < 2:
        return []
    base = runs[0].final
    differ = sorted(a for a in base if any(r.final.get(a, base[a])[0] != base[a][0] for r in runs[1:]))
    return [(a, [r.final.get(a, ("?", "")) for r in runs]) for a in differ[:most]]


def count_differences(runs: list[PolicyRun]) -> int:
    base = runs[0].final
    return sum(1 for a in base if any(r.final.get(a, base[a])[0] != base[a][0] for r in runs[1:]))


def format_backtest(runs: list[PolicyRun], source: str) -> str:
    width = max(18, *(len(r.name) + 2 for r in runs))
    lines = [f"{source}: {len(runs)} polic{'y' if len(runs) == 1 else 'ies'}", "",
             f"{'':<52}" + "".join(f"{r.name:>{width}}" for r in runs)]
    lines += [f"{label:<52}" + "".join(f"{v:>{width}}" for v in vals) for label, vals in _rows(runs)]
    if len(runs) > 1:
        diff = differences(runs)
        lines += ["", f"accounts whose final state differs from {runs[0].name}'s: {count_differences(runs):,}"
                  + (f" (the first {len(diff)})" if diff else "")]
        for aid, finals in diff:
            lines.append(f"  {aid}")
            for r, (state, why) in zip(runs, finals):
                lines.append(f"    {r.name}: {state}  {why[:160]}")
    return "\n".join(lines)


def render_backtest_html(runs: list[PolicyRun], source: str) -> str:
    from .report import STYLE

    head = "".join(f"<th>{html.escape(r.name)}</th>" for r in runs)
    body = "".join(f"<tr><td>{html.escape(label)}</td>" + "".join(f"<td>{html.escape(v)}</td>" for v in vals) + "</tr>"
                   for label, vals in _rows(runs))
    diff = "".join(
        f"<tr><td>{html.escape(aid)}</td>"
        + "".join(f"<td><b>{html.escape(state)}</b><br><span class='muted'>{html.escape(why)}</span></td>"
                  for state, why in finals) + "</tr>"
        for aid, finals in differences(runs, 100))
    diff_html = (f"<h2>Accounts whose final state differs ({count_differences(runs):,})</h2>"
                 f"<table><tr><th>account</th>{head}</tr>{diff}</table>" if len(runs) > 1 else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>riskmon backtest: {html.escape(source)}</title>
<style>{STYLE}</style></head><body>
<h1>riskmon backtest</h1>
<p class="muted">{html.escape(source)}: the log replayed once per policy, judged strictly before each account's outcome.</p>
<table><tr><th></th>{head}</tr>{body}</table>
{diff_html}
</body></html>
"""
