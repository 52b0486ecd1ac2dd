"""A static HTML report of a replay: decisions over time, accounts by state, scores, AUC over time.

One self-contained file (inline SVG, no scripts, no network), for people who
would rather look than read. ``riskmon replay ev.jsonl --report report.html``.
"""
from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from riskmon.models.early_warning import RULE_LEVELS
from riskmon.models.policy import Policy, default_policy
from riskmon.models.quality import roc_auc
from riskmon.models.stability import MIN_COUNT
from riskmon.models.units import DAY_MS
from riskmon.models.vocabulary import ACTIONS, BREAKER_ACTIONS, STATES, STATUSES

if TYPE_CHECKING:
    from riskmon.models.evaluation import Evaluation
    from riskmon.models.step import StepResult

    from ..replay import ReplaySummary

__all__ = ["ReportCollector", "STYLE", "render_html"]

SCORE_BINS = 20
MIN_OUTCOMES = 50
# A state and the action that escalates into it share the table's colour; a reopening is drawn in
# the colour of an open line, a cleared flag in grey.
COLOURS = {
    **{s.name: s.colour for s in STATES}, **{s.escalation: s.colour for s in STATES if s.escalation},
    "reopen": STATES[0].colour, "clear": "#868e96", "auc": "#5f3dc4", "scores": "#495057",
}


@dataclass
class ReportCollector:
    """What the report plots, gathered from each step result of a replay in event-time order."""

    decisions_by_week: Counter[tuple[int, str]] = field(default_factory=Counter)
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    score_bins: list[int] = field(default_factory=lambda: [0] * SCORE_BINS)
    status_of: dict[str, str] = field(default_factory=dict)
    status_now: Counter[str] = field(default_factory=Counter)
    status_by_week: dict[int, dict[str, int]] = field(default_factory=dict)
    outcomes_by_month: dict[tuple[int, int], tuple[list[int], list[float]]] = field(default_factory=dict)
    reason_text: dict[str, str] = field(default_factory=dict)  # reason code -> its text, as first given
    policy_versions: Counter[str] = field(default_factory=Counter)  # decisions taken under each
    model_versions: Counter[str] = field(default_factory=Counter)
    policy_now: str = ""  # in force at the last decision
    model_now: str = ""
    held: list[tuple[int, str, str, str]] = field(default_factory=list)  # (ts, account, action, note) of breaker decisions
    # Per account, its decisions: (ts, action, previous -> new, score, reasons), for the two timelines.
    timeline: dict[str, list[tuple[int, str, str, float, str]]] = field(default_factory=dict)
    first_ts: int | None = None
    last_ts: int = 0

    def observe(self, ts: int, result: StepResult) -> None:
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = max(self.last_ts, ts)
        week = self.week_of(ts)
        s = result.state
        old = self.status_of.get(s["id"])
        if old != s["status"]:
            if old is not None:
                self.status_now[old] -= 1
            self.status_now[s["status"]] += 1
            self.status_of[s["id"]] = s["status"]
        self.status_by_week[week] = dict(self.status_now)  # the last event of the week wins: the state at its end
        self.score_bins[min(int(s["score"] * SCORE_BINS), SCORE_BINS - 1)] += 1
        for d in result.decisions:
            self.decisions_by_week[(week, d.action)] += 1
            if d.reasons:
                self.reasons[(d.action, d.reasons[0].code)] += 1
            for r in d.reasons:
                self.reason_text.setdefault(r.code, r.text)
            self.policy_versions[d.policy_version] += 1
            self.model_versions[d.model_version] += 1
            self.policy_now, self.model_now = d.policy_version, d.model_version
            why = "; ".join(f"{r.code}: {r.text}" for r in d.reasons[:3])
            if d.action in BREAKER_ACTIONS:
                self.held.append((ts, s["id"], d.action, why))
            self.timeline.setdefault(s["id"], []).append(
                (ts, d.action, f"{d.previous_state} -> {d.new_state}", d.score, why))
        if result.outcomes:
            t = datetime.fromtimestamp(ts / 1000, timezone.utc)
            labels, scores = self.outcomes_by_month.setdefault((t.year, t.month), ([], []))
            for o in result.outcomes:
                if o.score is not None:
                    labels.append(int(o.default))
                    scores.append(o.score)

    def week_of(self, ts: int) -> int:
        return (ts - (self.first_ts or ts)) // (7 * DAY_MS)

    def week_start(self, week: int) -> str:
        return _date((self.first_ts or 0) + week * 7 * DAY_MS)


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d")


# -- SVG ----------------------------------------------------------------------

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 760, 280, 56, 150, 16, 40


def _axes(x_labels: list[str], y_max: float, y_min: float = 0.0, y_fmt: str = "{:g}", x_title: str = "",
          y_title: str = "") -> list[str]:
    out = [f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="#adb5bd"/>',
           f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="#adb5bd"/>',
           f'<text class="axis" x="{(PAD_L + W - PAD_R) / 2:.0f}" y="{H - 4}" text-anchor="middle">{html.escape(x_title)}</text>',
           f'<text class="axis" x="12" y="{(PAD_T + H - PAD_B) / 2:.0f}" text-anchor="middle" '
           f'transform="rotate(-90 12 {(PAD_T + H - PAD_B) / 2:.0f})">{html.escape(y_title)}</text>']
    for i in range(5):
        v = y_min + (y_max - y_min) * i / 4
        y = _y(v, y_min, y_max)
        out.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{W - PAD_R}" y2="{y:.1f}" stroke="#f1f3f5"/>')
        if y_fmt:
            out.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{y_fmt.format(v)}</text>')
    n = len(x_labels)
    step = max(1, -(-n // 6))  # at most 6 labels: they must not overlap
    shown = list(range(0, n, step))
    if shown and shown[-1] != n - 1:  # the last one always (it may say "partial"), in place of a near neighbour
        shown[-1 if n - 1 - shown[-1] < step / 2 else len(shown):] = [n - 1]
    for i in shown:
        x = _x(i, n)
        out.append(f'<text x="{x:.1f}" y="{H - PAD_B + 16}" text-anchor="middle">{html.escape(x_labels[i])}</text>')
    return out


def _nice(v: float) -> float:
    """A round axis top at or above ``v`` (1, 2, 2.5, 5 times a power of ten, divisible in 4 ticks)."""
    if v <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(v))
    return next(m * base for m in (1, 2, 4, 8, 10) if m * base >= v)


def _compact(n: int) -> str:
    """
    >>> _compact(1), _compact(10_000), _compact(1_000_000)
    ('1', '10k', '1M')
    """
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div:
            return f"{n / div:g}{suffix}"
    return str(n)


def _x(i: float, n: int) -> float:
    return PAD_L + (W - PAD_L - PAD_R) * (i / max(n - 1, 1))


def _y(v: float, y_min: float, y_max: float) -> float:
    span = (y_max - y_min) or 1.0
    return H - PAD_B - (H - PAD_T - PAD_B) * (v - y_min) / span


def _empty_figure(title: str, text: str) -> str:
    """What a chart with nothing to draw shows instead: its title and why."""
    return f'<figure><figcaption>{html.escape(title)}</figcaption><p class="empty">{html.escape(text)}</p></figure>'


def _svg(title: str, body: list[str]) -> str:
    return (f'<figure><figcaption>{html.escape(title)}</figcaption>'
            f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{html.escape(title)}">'
            + "".join(body) + "</svg></figure>")


def line_chart(title: str, x_labels: list[str], series: dict[str, list[float | None]], y_min: float = 0.0,
               y_max: float | None = None, y_fmt: str = "{:,.0f}", x_title: str = "", y_title: str = "",
               empty: str = "nothing to plot", guide: tuple[float, str] | None = None) -> str:
    """Lines over ``x_labels``; ``empty`` is said instead of an empty chart; ``guide``: a dashed level and its name."""
    values = [v for vs in series.values() for v in vs if v is not None]
    if not values:
        return _empty_figure(title, empty)
    top = y_max if y_max is not None else _nice(max(values, default=1.0))
    body = _axes(x_labels, top, y_min, y_fmt, x_title, y_title)
    if guide is not None:
        gy = _y(guide[0], y_min, top)
        body.append(f'<line x1="{PAD_L}" y1="{gy:.1f}" x2="{W - PAD_R}" y2="{gy:.1f}" stroke="#868e96" stroke-dasharray="5 4"/>'
                    f'<text x="{W - PAD_R + 12}" y="{gy + 4:.1f}">{html.escape(guide[1])}</text>')
    n = len(x_labels)
    for k, (name, vs) in enumerate(series.items()):
        colour = COLOURS.get(name, "#495057")
        pts = [(_x(i, n), _y(v, y_min, top)) for i, v in enumerate(vs) if v is not None]
        if len(pts) > 1:
            body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                        + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        for x, y in pts if len(pts) < 40 else ():
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>')
        ly = PAD_T + 14 + 18 * k
        body.append(f'<rect x="{W - PAD_R + 12}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
                    f'<text x="{W - PAD_R + 28}" y="{ly}">{html.escape(name)}</text>')
    return _svg(title, body)


def log_bar_chart(title: str, x_labels: list[str], values: list[float], colour: str, x_title: str = "",
                  y_title: str = "", empty: str = "nothing to plot") -> str:
    """Bars on a log scale: scores pile up near zero, and the tail is what matters."""
    if not any(values):
        return _empty_figure(title, empty)
    top = max(1.0, math.ceil(math.log10(max(values, default=1.0) or 1.0)))
    body = _axes(x_labels, top, 0.0, "", x_title, y_title)
    for k in range(int(top) + 1):  # the axis labels are the powers of ten themselves
        body.append(f'<text x="{PAD_L - 6}" y="{_y(k, 0, top) + 4:.1f}" text-anchor="end">{_compact(10 ** k)}</text>')
    n = len(values)
    width = (W - PAD_L - PAD_R) / max(n, 1)
    for i, v in enumerate(values):
        y = _y(math.log10(v) if v >= 1 else 0.0, 0, top)
        body.append(f'<rect x="{PAD_L + i * width + 1:.1f}" y="{y:.1f}" width="{width - 2:.1f}" '
                    f'height="{H - PAD_B - y:.1f}" fill="{colour}"><title>{html.escape(x_labels[i])}: {v:g}</title></rect>')
    return _svg(title, body)


# -- the page -------------------------------------------------------------------

STYLE = """body { font: 14px/1.45 system-ui, sans-serif; color: #212529; max-width: 820px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
figure { margin: 18px 0; } figcaption { font-weight: 600; margin-bottom: 4px; }
svg text { font: 11px system-ui, sans-serif; fill: #495057; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #e9ecef; text-align: left; }
.muted { color: #868e96; } .empty { color: #868e96; border: 1px dashed #ced4da; padding: 24px; text-align: center; }
svg text.axis { font-weight: 600; } h3 { font-size: 15px; margin-top: 18px; }
"""


def _timelines(data: ReportCollector) -> list[tuple[str, str, list[tuple[int, str, str, float, str]]]]:
    """Two accounts to read decision by decision: one warned and cured (back to normal), one closed.

    The first of each kind by account id, so the same log always shows the same two."""
    picks = []
    cured = next((a for a in sorted(data.timeline) if data.timeline[a][0][1] == "warning"
                  and data.status_of.get(a) == "normal"), None)
    closed = next((a for a in sorted(data.timeline) if any(t[1] == "closure" for t in data.timeline[a])), None)
    if cured is not None:
        picks.append(("warned, then cured", cured, data.timeline[cured]))
    if closed is not None:
        picks.append(("closed", closed, data.timeline[closed]))
    return picks


def _challenge_table(challenge: tuple[float | None, float | None, int] | None) -> str:
    """The latest champion/challenger comparison (riskmon model challenge), both scored before learning each outcome."""
    if challenge is None:
        return '<p class="muted">No challenger learned beside the model in force in this log (<code>riskmon model challenge</code>).</p>'
    champion, challenger, n = challenge

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    return ('<p class="muted">ROC AUC of each on the same latest outcomes, both scored on the statement\'s features before '
            f"learning the outcome (all shards together, {n:,} outcomes). The challenger never decides.</p>"
            f"<table><tr><th>model</th><th>AUC</th></tr><tr><td>champion (in force)</td><td>{f(champion)}</td></tr>"
            f"<tr><td>challenger</td><td>{f(challenger)}</td></tr></table>")


def _psi_table(psi: dict[str, float]) -> str:
    """The PSI of the score and of the features, highest first (see models/stability.py)."""
    if not psi:
        return (f'<p class="muted">Too few statements for a population stability index: each population needs '
                f"{MIN_COUNT:.0f}.</p>")
    rows = "".join(f"<tr><td><code>{html.escape(name)}</code></td><td>{v:.3f}</td>"
                   f"<td>{'not fitted on this population' if v > 0.25 else 'a shift worth a look' if v > 0.1 else 'stable'}"
                   "</td></tr>"
                   for name, v in sorted(psi.items(), key=lambda kv: (kv[0] != "score", -kv[1], kv[0])))
    return ('<p class="muted">The statements scored lately against those whose outcomes the model learned (the last '
            "~1,000 of each, all shards together); above 0.25 the model scores a population it was not fitted on.</p>"
            f"<table><tr><th>score or feature</th><th>PSI</th><th></th></tr>{rows}</table>")


def _truth_table(ev: Evaluation | None) -> str:
    if ev is None:
        return '<p class="muted">No truth file was given (<code>--truth</code>): nothing to compare with.</p>'
    f = (lambda x: "n/a" if x is None else f"{x:.3f}")
    rows = [
        ("accounts (default in truth)", f"{ev.accounts:,} ({ev.defaulters:,})"),
        ("account-level AUC of the peak score before the outcome (KS)", f"{f(ev.account_auc)} ({f(ev.account_ks)})"),
        ("warned or worse before the outcome: defaulters / good accounts", f"{ev.warning_rate_defaulters:.1%} / {ev.warning_rate_good:.1%}"),
        ("frozen or closed before it: defaulters / good accounts", f"{ev.action_rate_defaulters:.1%} / {ev.action_rate_good:.1%}"),
        ("closed before it: defaulters / good accounts", f"{ev.closure_rate_defaulters:.1%} / {ev.closure_rate_good:.1%}"),
    ]
    return "<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in rows) + "</table>"


def render_html(data: ReportCollector, summary: ReplaySummary, source: str, policy: Policy | None = None) -> str:
    """The page; ``policy``: the one in force at the start (the shipped default if None), whose levels it names."""
    policy = policy or default_policy()
    levels = policy.thresholds
    weeks = list(range(data.week_of(data.last_ts) + 1)) if data.first_ts is not None else []
    week_labels = [data.week_start(w) for w in weeks]
    # The last week is partial when the log ends before its seventh day: its counts are not a week's.
    partial = bool(weeks) and data.last_ts - (data.first_ts or 0) < (weeks[-1] + 1) * 7 * DAY_MS - DAY_MS
    if partial:
        week_labels[-1] += " (partial)"
    per_week = {a: [float(data.decisions_by_week.get((w, a), 0)) for w in weeks] for a in ACTIONS
                if any(data.decisions_by_week.get((w, a)) for w in weeks)}
    states: dict[str, list[float | None]] = {s: [] for s in STATUSES}
    last: dict[str, int] = {}
    for w in weeks:
        last = data.status_by_week.get(w, last)
        for s in STATUSES:
            states[s].append(float(last.get(s, 0)))
    months = sorted(data.outcomes_by_month)
    aucs = [roc_auc(*data.outcomes_by_month[m]) for m in months]
    counts = [len(data.outcomes_by_month[m][0]) for m in months]
    # A month with few outcomes gives a noisy AUC: plotted only from MIN_OUTCOMES, listed below in full.
    plotted = [a if a is not None and c >= MIN_OUTCOMES else None for a, c in zip(aucs, counts)]
    floor = min([0.5, *(math.floor(a * 10) / 10 for a in plotted if a is not None)])
    bins = [f"{i / SCORE_BINS:.2f}" for i in range(SCORE_BINS)]
    overall = summary.outcome_auc
    rows = "".join(f"<tr><td>{html.escape(a)}</td><td><code>{html.escape(r)}</code></td><td>{n:,}</td></tr>"
                   for (a, r), n in sorted(data.reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:15])
    codes = "".join(f"<tr><td><code>{html.escape(c)}</code></td><td>{html.escape(t)}</td><td>"
                    + html.escape(", ".join(f"{k} = {levels[k]:g}" for k in RULE_LEVELS.get(c, ()) if k in levels)
                                  or "the model's push on the score (a driver, not a rule)") + "</td></tr>"
                    for c, t in sorted(data.reason_text.items()))
    versions = "".join(f"<tr><td>{kind}</td><td><code>{html.escape(v)}</code>{' (in force at the end)' if v == now else ''}</td>"
                       f"<td>{n:,}</td></tr>"
                       for kind, counter, now in (("policy", data.policy_versions, data.policy_now),
                                                  ("model", data.model_versions, data.model_now))
                       for v, n in sorted(counter.items()))
    held = "".join(f"<tr><td>{_date(ts)}</td><td>{html.escape(a)}</td><td>{html.escape(act)}</td><td>{html.escape(why)}</td></tr>"
                   for ts, a, act, why in data.held[:50])
    held_html = (f"<p>{len(data.held):,} breaker decisions (a move held for review, or a held move dropped); "
                 f"the first {min(len(data.held), 50)}:</p><table><tr><th>date</th><th>account</th><th>action</th>"
                 f"<th>reasons</th></tr>{held}</table>" if data.held else
                 '<p class="muted">The mass-action breaker held nothing in this log.</p>')
    timelines = "".join(
        f"<h3>{html.escape(kind)}: {html.escape(aid)}</h3><table><tr><th>date</th><th>action</th><th>state</th>"
        f"<th>score</th><th>reasons</th></tr>"
        + "".join(f"<tr><td>{_date(ts)}</td><td>{html.escape(act)}</td><td>{html.escape(move)}</td><td>{score:.2f}</td>"
                  f"<td>{html.escape(why)}</td></tr>" for ts, act, move, score, why in steps[:20])
        + "</table>" for kind, aid, steps in _timelines(data)) or '<p class="muted">No account was warned and cured, or closed.</p>'
    auc_rows = "".join(f"<tr><td>{y}-{m:02d}</td><td>{c:,}</td><td>{'n/a' if a is None else f'{a:.3f}'}</td></tr>"
                       for (y, m), c, a in zip(months, counts, aucs))
    figures = [
        line_chart("Decisions per week, by action", week_labels, dict(per_week),  # type: ignore[arg-type]
                   x_title="week starting", y_title="decisions", empty="No decisions in this log."),
        line_chart("Accounts by early-warning state, at the end of each week", week_labels, states,
                   x_title="week starting", y_title="accounts", empty="No account events in this log."),
        log_bar_chart("Scores given at each event (probability of default in bands of 0.05; events, log scale)", bins,
                      [float(v) for v in data.score_bins], COLOURS["scores"], x_title="score (probability of default)",
                      y_title="events", empty="No event was scored."),
        line_chart(f"Prequential AUC by month of outcome (score at the statement vs. what came of it; months with {MIN_OUTCOMES}+ outcomes)",
                   [f"{y}-{m:02d}" for y, m in months], {"auc": plotted}, y_min=floor, y_max=1.0, y_fmt="{:.2f}",
                   x_title="month of outcome", y_title="AUC", guide=(0.5, "0.5: chance"),
                   empty=f"No month has {MIN_OUTCOMES} or more graded outcomes yet: the AUC of fewer is noise "
                         "(every month is listed below)."),
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>riskmon replay report: {html.escape(source)}</title>
<style>
{STYLE}</style></head><body>
<h1>riskmon replay report</h1>
<p class="muted">{html.escape(source)} &middot; event time {_date(data.first_ts or 0)} to {_date(data.last_ts)}</p>
<p>{summary.events:,} events, {sum(summary.rejected.values()):,} rejected, {summary.duplicates:,} duplicates;
{sum(summary.decisions.values()):,} decisions ({html.escape(", ".join(f"{k} {v:,}" for k, v in sorted(summary.decisions.items())) or "none")});
{len(summary.outcome_labels):,} outcomes graded, prequential AUC {"n/a" if overall is None else f"{overall:.3f}"}.</p>
{'<p class="muted">The last week is partial: the log ends before its seventh day.</p>' if partial else ''}
{"".join(figures)}
<h2>Policy and model versions</h2>
<table><tr><th></th><th>version</th><th>decisions under it</th></tr>{versions}</table>
<h2>Most frequent deciding reasons</h2>
<table><tr><th>action</th><th>reason</th><th>decisions</th></tr>{rows}</table>
<h2>What each reason means</h2>
<p class="muted">Each code with its text as first given here, and the policy levels that set it (in the policy in
force at the start, <code>{html.escape(policy.version)}</code>; a policy update may change them).</p>
<table><tr><th>code</th><th>text</th><th>levels</th></tr>{codes}</table>
<h2>Against the truth</h2>
{_truth_table(summary.evaluation)}
<h2>The mass-action breaker</h2>
{held_html}
<h2>Two accounts, decision by decision</h2>
{timelines}
<h2>AUC by month</h2>
<table><tr><th>month</th><th>outcomes</th><th>AUC</th></tr>{auc_rows}</table>
<h2>Population stability</h2>
{_psi_table(summary.psi)}
<h2>Champion and challenger</h2>
{_challenge_table(summary.challenge)}
</body></html>
"""
