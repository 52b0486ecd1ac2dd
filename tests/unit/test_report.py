"""The replay report plots what replay did, is self-contained, and is deterministic."""
from __future__ import annotations

import html
import io
import pathlib
import re
from html.parser import HTMLParser

from riskmon.models.codec import dumps
from riskmon.models.simulate import simulate
from riskmon.streams.cli import main
from riskmon.streams.replay import replay
from riskmon.streams.tools.report import ReportCollector, render_html


class Tags(HTMLParser):
    VOID = {"meta", "br", "img", "line", "rect", "circle", "polyline"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.seen: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.seen.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.seen.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def run(tmp_path: pathlib.Path) -> tuple[ReportCollector, str, object]:
    events, _ = simulate(300, 120, seed=3)
    log = tmp_path / "ev.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    collector = ReportCollector()
    summary = replay(log, io.BytesIO(), collector=collector)
    return collector, render_html(collector, summary, "ev.jsonl"), summary


def test_report_counts_agree_with_the_replay(tmp_path: pathlib.Path) -> None:
    collector, page, summary = run(tmp_path)
    by_action: dict[str, int] = {}
    for (_, action), n in collector.decisions_by_week.items():
        by_action[action] = by_action.get(action, 0) + n
    assert by_action == dict(summary.decisions)  # type: ignore[attr-defined]
    assert sum(collector.status_now.values()) == len(collector.status_of) == 300
    assert sum(collector.score_bins) == summary.events  # type: ignore[attr-defined]  # no rejects or duplicates here
    graded = sum(len(labels) for labels, _ in collector.outcomes_by_month.values())
    assert graded == len(summary.outcome_labels) > 0  # type: ignore[attr-defined]
    assert page.count("<svg") == 4
    for caption in ("Decisions per week", "Accounts by early-warning state", "Scores given", "Prequential AUC by month"):
        assert caption in page
    assert f"{summary.outcome_auc:.3f}" in page  # type: ignore[attr-defined]
    # Population stability: the score first, then each feature with its PSI as replay measured it.
    psi = summary.psi  # type: ignore[attr-defined]
    assert "score" in psi and len(psi) > 20
    table = page[page.index("<h2>Population stability</h2>"):]
    assert table.index("<code>score</code>") < min(table.index(f"<code>{f}</code>") for f in psi if f != "score")
    for name, value in psi.items():
        assert f"<code>{name}</code></td><td>{value:.3f}</td>" in table


def test_report_is_well_formed_self_contained_and_deterministic(tmp_path: pathlib.Path) -> None:
    _, page, _ = run(tmp_path)
    _, again, _ = run(tmp_path)
    assert page == again
    tags = Tags()
    tags.feed(page)
    assert tags.stack == [] and "polyline" in tags.seen and "rect" in tags.seen
    assert not re.search(r"<script|https?://|src=", page)  # nothing fetched, nothing run


def test_cli_writes_the_report_beside_the_decisions(tmp_path: pathlib.Path) -> None:
    events, _ = simulate(40, 60, seed=1)
    log = tmp_path / "ev.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    assert main(["replay", str(log), "--out", str(tmp_path / "d.jsonl"), "--report", str(tmp_path / "r.html"), "--quiet"]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")


def test_report_explains_itself(tmp_path: pathlib.Path) -> None:
    """Reason codes with their texts and policy levels, versions, the truth, the breaker, two timelines,
    axis titles, the AUC chart's 0.5 line, a partial last week marked, and words instead of empty charts."""
    events, truth = simulate(400, 150, seed=3)  # 150 days: the shipped policy closes at 121 days past due
    log = tmp_path / "ev.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    collector = ReportCollector()
    summary = replay(log, io.BytesIO(), collector=collector, truth=truth)
    page = render_html(collector, summary, "ev.jsonl")
    for code, text in collector.reason_text.items():
        assert f"<code>{code}</code></td><td>{html.escape(text)}" in page
    assert "dpd.watch = 1" in page and "score.limit = 0.6, score.limit_exit = 0.4" in page
    assert "<code>default-2026.1</code> (in force at the end)" in page and "<code>m.v0</code>" in page  # one model
    ev = summary.evaluation  # type: ignore[attr-defined]
    assert f"{ev.warning_rate_defaulters:.1%} / {ev.warning_rate_good:.1%}" in page
    assert "<h3>warned, then cured: " in page and "<h3>closed: " in page
    assert "The mass-action breaker held nothing" in page
    for title in ("week starting", "decisions", "accounts", "score (probability of default)", "month of outcome", "AUC"):
        assert f">{title}</text>" in page
    assert 'stroke-dasharray="5 4"' in page and "0.5: chance" in page
    # 120 days from the first event: the 18th week has only a day or so.
    assert "(partial)" in page and "The last week is partial" in page

    # A log with nothing to grade or decide says so instead of drawing empty axes.
    quiet = tmp_path / "quiet.jsonl"
    quiet.write_bytes(b"".join(dumps(e) + b"\n" for e in events if e["type"] == "account_opened"))
    c2 = ReportCollector()
    s2 = replay(quiet, io.BytesIO(), collector=c2)
    page2 = render_html(c2, s2, "quiet.jsonl")
    assert "No decisions in this log." in page2 and "No month has 50 or more graded outcomes" in page2
    assert "No truth file was given" in page2 and "No account was warned and cured, or closed." in page2
    assert page2.count("<svg") == 2  # states and scores only


def test_every_rule_level_the_report_names_is_a_policy_key() -> None:
    from riskmon.models.early_warning import RULE_LEVELS
    from riskmon.models.policy import default_policy

    keys = default_policy().thresholds
    assert all(k in keys for levels in RULE_LEVELS.values() for k in levels)
