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

from riskmon.models.quality import roc_auc
from riskmon.models.units import DAY_MS
from riskmon.models.vocabulary import ACTIONS, STATES, STATUSES

if TYPE_CHECKING:
    from riskmon.models.step import StepResult

    from ..replay import ReplaySummary

__all__ = ["ReportCollector", "render_html"]

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


def _axes(x_labels: list[str], y_max: float, y_min: float = 0.0, y_fmt: str = "{:g}") -> list[str]:
    out = [f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="#adb5bd"/>',
           f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="#adb5bd"/>']
    for i in range(5):
        v = y_min + (y_max - y_min) * i / 4
        y = _y(v, y_min, y_max)
        out.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{W - PAD_R}" y2="{y:.1f}" stroke="#f1f3f5"/>')
        if y_fmt:
            out.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{y_fmt.format(v)}</text>')
    n = len(x_labels)
    step = max(1, -(-n // 6))  # at most 6 labels: they must not overlap
    for i in range(0, n, step):
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


def _svg(title: str, body: list[str]) -> str:
    return (f'<figure><figcaption>{html.escape(title)}</figcaption>'
            f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{html.escape(title)}">'
            + "".join(body) + "</svg></figure>")


def line_chart(title: str, x_labels: list[str], series: dict[str, list[float | None]], y_min: float = 0.0,
               y_max: float | None = None, y_fmt: str = "{:,.0f}") -> str:
    values = [v for vs in series.values() for v in vs if v is not None]
    top = y_max if y_max is not None else _nice(max(values, default=1.0))
    body = _axes(x_labels, top, y_min, y_fmt)
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


def log_bar_chart(title: str, x_labels: list[str], values: list[float], colour: str) -> str:
    """Bars on a log scale: scores pile up near zero, and the tail is what matters."""
    top = max(1.0, math.ceil(math.log10(max(values, default=1.0) or 1.0)))
    body = _axes(x_labels, top, 0.0, "")
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

def render_html(data: ReportCollector, summary: ReplaySummary, source: str) -> str:
    weeks = list(range(data.week_of(data.last_ts) + 1)) if data.first_ts is not None else []
    week_labels = [data.week_start(w) for w in weeks]
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
    rows = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(r)}</td><td>{n:,}</td></tr>"
                   for (a, r), n in sorted(data.reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:15])
    auc_rows = "".join(f"<tr><td>{y}-{m:02d}</td><td>{c:,}</td><td>{'n/a' if a is None else f'{a:.3f}'}</td></tr>"
                       for (y, m), c, a in zip(months, counts, aucs))
    figures = [
        line_chart("Decisions per week, by action", week_labels, dict(per_week)),  # type: ignore[arg-type]
        line_chart("Accounts by early-warning state, at the end of each week", week_labels, states),
        log_bar_chart("Scores given at each event (probability of default in bands of 0.05; events, log scale)", bins,
                      [float(v) for v in data.score_bins], COLOURS["scores"]),
        line_chart(f"Prequential AUC by month of outcome (score at the statement vs. what came of it; months with {MIN_OUTCOMES}+ outcomes)",
                   [f"{y}-{m:02d}" for y, m in months], {"auc": plotted}, y_min=floor, y_max=1.0, y_fmt="{:.2f}"),
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>riskmon replay report: {html.escape(source)}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; color: #212529; max-width: 820px; margin: 24px auto; padding: 0 16px; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
figure {{ margin: 18px 0; }} figcaption {{ font-weight: 600; margin-bottom: 4px; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #495057; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 10px; border-bottom: 1px solid #e9ecef; text-align: left; }}
.muted {{ color: #868e96; }}
</style></head><body>
<h1>riskmon replay report</h1>
<p class="muted">{html.escape(source)} &middot; event time {_date(data.first_ts or 0)} to {_date(data.last_ts)}</p>
<p>{summary.events:,} events, {sum(summary.rejected.values()):,} rejected, {summary.duplicates:,} duplicates;
{sum(summary.decisions.values()):,} decisions ({html.escape(", ".join(f"{k} {v:,}" for k, v in sorted(summary.decisions.items())) or "none")});
{len(summary.outcome_labels):,} outcomes graded, prequential AUC {"n/a" if overall is None else f"{overall:.3f}"}.</p>
{"".join(figures)}
<h2>Most frequent deciding reasons</h2>
<table><tr><th>action</th><th>reason</th><th>decisions</th></tr>{rows}</table>
<h2>AUC by month</h2>
<table><tr><th>month</th><th>outcomes</th><th>AUC</th></tr>{auc_rows}</table>
</body></html>
"""
