"""The replay report plots what replay did, is self-contained, and is deterministic."""
from __future__ import annotations

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
