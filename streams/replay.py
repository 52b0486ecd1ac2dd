"""Replay an event log through the core, in event-time order, deterministically."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Protocol

import orjson

from riskmon.models.codec import DEFAULT_MAX_RECORD_BYTES, decode, dumps
from riskmon.models.engine import Engine
from riskmon.models.portfolio import PORTFOLIO_BY_DEFAULT
from riskmon.models.errors import Rejected
from riskmon.models.evaluation import EarlyWarningTracker, Evaluation, outcome_times
from riskmon.models.events import Event, event_order
from riskmon.models.featurespec import FeatureSpec
from riskmon.models.policy import Policy
from riskmon.models.quality import roc_auc
from riskmon.models.stability import Stability
from riskmon.models.risk_model import RiskModel
from riskmon.models.step import StepResult
from riskmon.models.vocabulary import SEVERITY

from .progress import Progress
from .render import counted

__all__ = ["Observer", "ReplaySummary", "apply_log", "load_truth", "read_log", "replay"]


class Observer(Protocol):
    """Sees every result replay applies, at its event time (streams.report's collector is one)."""

    def observe(self, ts: int, result: StepResult) -> None: ...


@dataclass
class ReplaySummary:
    events: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    shadow: Counter[str] = field(default_factory=Counter)  # a candidate policy's in shadow, by action
    outcome_labels: list[int] = field(default_factory=list)
    outcome_scores: list[float] = field(default_factory=list)
    cold_outcomes: int = 0
    rolling_auc: float | None = None
    drifts: int = 0
    evaluation: Evaluation | None = None
    # Population stability at the end, all shards together: "score" and each feature -> PSI.
    psi: dict[str, float] = field(default_factory=dict)
    # Champion and challenger, all shards together, on the latest comparison: (champion AUC, challenger AUC, outcomes).
    challenge: tuple[float | None, float | None, int] | None = None

    @property
    def outcome_auc(self) -> float | None:
        return roc_auc(self.outcome_labels, self.outcome_scores)

    def line(self) -> str:
        def each(c: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))

        auc = self.outcome_auc
        rej = sum(self.rejected.values())
        parts = [
            counted(self.events, "event"),
            f"{rej} rejected" + (f" ({each(self.rejected)})" if rej else ""),
            counted(self.duplicates, "duplicate"),
            f"{counted(sum(self.decisions.values()), 'decision')} ({each(self.decisions) or 'none'})",
            *([f"{counted(sum(self.shadow.values()), 'shadow decision')} ({each(self.shadow)})"] if self.shadow else []),
            f"{counted(len(self.outcome_labels) + self.cold_outcomes, 'outcome')} ({self.cold_outcomes} scored before warm-up),"
            " prequential AUC "
            + ("n/a" if auc is None else f"{auc:.3f}")
            + ("" if self.rolling_auc is None else f", rolling AUC {self.rolling_auc:.3f}"),
            counted(self.drifts, "drift detection"),
        ]
        return "; ".join(parts)



def read_log(lines: Iterable[bytes], summary: ReplaySummary, report: IO[str] | None,
             max_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> list[tuple[tuple[int, int, int], Event]]:
    """Decode every line; report bad ones with their line number and go on."""
    out: list[tuple[tuple[int, int, int], Event]] = []
    for n, raw in enumerate(lines, 1):
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            continue
        summary.events += 1
        try:
            ev = decode(raw, max_bytes)
        except Rejected as r:
            summary.rejected[r.reason.value] += 1
            if report is not None:
                report.write(f"line {n}: rejected: {r}\n")
            continue
        out.append((event_order(ev.ts, ev.type, n), ev))
    return out


def apply_log(events_path: str | Path, engine: Engine, summary: ReplaySummary, report: IO[str] | None = None,
              progress: str | None = None) -> Iterator[tuple[Event, list[StepResult]]]:
    """Each event of the log through ``engine`` in replay's order, with its results. Lines the codec
    refuses and events the core refuses are counted in ``summary`` (and reported by line number to
    ``report``) and passed over; ``progress`` names the progress line drawn on a terminal (None: none)."""
    with open(events_path, "rb") as f:
        log = read_log(f, summary, report)
    log.sort(key=lambda e: e[0])
    bar = Progress(progress or "", len(log), "events", enabled=progress is not None)
    for i, ((_, _, n), ev) in enumerate(log):
        try:
            results = engine.process(ev)
        except Rejected as r:
            summary.rejected[r.reason.value] += 1
            if report is not None:
                report.write(f"line {n}: rejected: {r}\n")
            continue
        yield ev, results
        if i % 2048 == 0:
            bar.update(i)
    bar.finish()


def replay(
    events_path: str | Path,
    out: IO[bytes],
    partitions: int = 4,
    policy: Policy | None = None,
    truth: list[dict[str, Any]] | None = None,
    report: IO[str] | None = None,
    progress: bool = False,
    checkpoint_every: int = 500,
    bad_dpd: int = 30,
    collector: Observer | None = None,
    spec: FeatureSpec | None = None,
    model: RiskModel | None = None,
    model_base: str = "",
    portfolio: bool = PORTFOLIO_BY_DEFAULT,
    shadow_out: IO[bytes] | None = None,
) -> ReplaySummary:
    """Run the log through the core; write decisions as JSON lines to ``out``, and what a candidate policy in
    shadow would decide (riskmon.models.shadow) to ``shadow_out``.

    ``collector`` sees every result (streams.report's collector gathers what the HTML report plots);
    ``model``: every partition starts from it (a model file's, whose version is ``model_base``)."""
    summary = ReplaySummary()
    engine = Engine(partitions, policy, checkpoint_every=checkpoint_every, bad_dpd=bad_dpd, spec=spec, model=model,
                    model_base=model_base, portfolio=portfolio)
    tracker = EarlyWarningTracker(bad_dpd, outcome_times(truth or []))
    for ev, results in apply_log(events_path, engine, summary, report, "replay" if progress else None):
        for result in results:
            if result.duplicate:
                summary.duplicates += 1
                continue
            if collector is not None:
                collector.observe(ev.ts, result)
            s = result.state
            tracker.observe(s["id"], s["score"] if result.model_ready else None, s["dpd"], SEVERITY[s["status"]], ev.ts)
            for o in result.outcomes:
                if o.score is None:
                    summary.cold_outcomes += 1
                    continue
                summary.outcome_labels.append(int(o.default))
                summary.outcome_scores.append(o.score)
            for d in result.decisions:
                summary.decisions[d.action] += 1
                out.write(dumps(d.to_dict()) + b"\n")
            for d in result.shadow or ():
                summary.shadow[d.action] += 1
                if shadow_out is not None:
                    shadow_out.write(dumps(d.to_dict()) + b"\n")
    # What learns: the portfolio's trainer, or each shard. The shards' populations scored, against the learned one.
    learners: list[Any] = [engine.portfolio] if engine.portfolio is not None else engine.monitors
    aucs = [m.quality.auc() for m in learners]
    known = [a for a in aucs if a is not None]
    summary.rolling_auc = sum(known) / len(known) if known else None
    summary.drifts = sum(m.quality.drifts for m in learners)
    stabilities = [m.stability for m in engine.monitors] + ([engine.portfolio.stability] if engine.portfolio else [])
    summary.psi = Stability.merged(stabilities, engine.monitors[0].spec.names)
    compared = [c for m in learners for c in m.challenge]
    if compared:
        ys = [c[0] for c in compared]
        summary.challenge = (roc_auc(ys, [c[1] for c in compared]), roc_auc(ys, [c[2] for c in compared]), len(ys))
    if truth is not None:
        summary.evaluation = tracker.evaluate(truth)
    return summary


def load_truth(path: str | Path) -> list[dict[str, Any]]:
    """A truth file (``riskmon simulate`` writes one): a JSON object per line with ``account_id``,
    ``defaults`` (true or false) and ``default_ts`` (RFC 3339, or null). Anything else is a
    ValueError naming the file and the line."""
    from riskmon.models.codec import parse_ts
    from riskmon.models.errors import Rejected

    out = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                t = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"truth file {path} line {n}: not JSON ({str(exc)[:60]})") from None
            if not isinstance(t, dict) or "defaults" not in t or "account_id" not in t:
                hint = " (it looks like an event log: give the .truth.jsonl beside it)" if isinstance(t, dict) and "type" in t else ""
                raise ValueError(f"truth file {path} line {n}: needs account_id and defaults{hint}")
            if not isinstance(t["account_id"], str) or not isinstance(t["defaults"], bool):
                raise ValueError(f"truth file {path} line {n}: account_id must be a string and defaults true or false")
            if t.get("default_ts") is not None:
                try:
                    parse_ts(t["default_ts"], "default_ts")
                except Rejected as r:
                    raise ValueError(f"truth file {path} line {n}: {r}") from None
            out.append(t)
    if not out:
        raise ValueError(f"truth file {path} is empty")
    return out
