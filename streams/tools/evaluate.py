"""`riskmon evaluate LOG`: judge the core on any labelled event log, strictly before each outcome.

Labels come from the log itself (a statement is bad once it is ``bad_dpd``
days past due, good once settled before; an account with graded statements is
bad from the first bad one, its outcome) or from a truth file (``--truth``:
``account_id``, ``defaults``, ``default_ts``; an account's outcome is then its
default time, or its first ``bad_dpd`` days past due if sooner). Side by side:

- the online model: prequential AUC over the statements (each scored before
  its outcome was known), and the account-level AUC of the peak score strictly
  before the account's outcome;
- the early warning: shares of bad and good accounts warned (or worse) before
  the outcome, and the lead time from the first warning to it;
- offline references on the monitor's own features at the graded statements:
  scikit-learn logistic regression and gradient boosting, cross-validated
  (stratified k-fold), so the online figures can be read against what the
  same features give to a batch learner with every label.

The event that reveals an outcome never counts as a warning before it.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from riskmon.models.portfolio import PORTFOLIO_BY_DEFAULT
from riskmon.models.evaluation import EarlyWarningTracker, outcome_times
from riskmon.models.featurespec import FeatureSpec
from riskmon.models.policy import Policy
from riskmon.models.quality import roc_auc
from riskmon.models.risk_model import RiskModel
from riskmon.models.step import StepResult
from riskmon.models.units import DAY_MS
from riskmon.models.vocabulary import SEVERITY

from ..replay import replay

__all__ = ["Judge", "LogEvaluation", "evaluate_log", "format_log_evaluation", "lead_days", "reference_models"]


@dataclass
class LogEvaluation:
    events: int
    rejected: int
    statements: int
    bad_statements: int
    accounts: int
    bad_accounts: int
    prequential_auc: float | None
    account_auc: float | None
    warned_bad: float
    warned_good: float
    lead_days: dict[str, float] | None
    offline: dict[str, float | None] = field(default_factory=dict)
    folds: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def reference_models() -> dict[str, Any]:
    """The offline references, unfitted: what the online model is read against (here and on UCI)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "gradient boosting": HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=31,
                                                            l2_regularization=1.0, random_state=0),
    }


def _offline_cv(x: np.ndarray, y: np.ndarray, folds: int) -> dict[str, float | None]:
    """Cross-validated AUC of the references on the statements' features."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    models = reference_models()
    if len(set(y.tolist())) < 2 or min(int(y.sum()), int(len(y) - y.sum())) < folds:
        return dict.fromkeys(models)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    out: dict[str, float | None] = {}
    for name, model in models.items():
        p = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
        out[name] = roc_auc(list(y), list(p))
    return out


def lead_days(tracker: EarlyWarningTracker, bad: set[str]) -> dict[str, float] | None:
    """Days from the first warning to the outcome over the bad accounts warned before it (p25, median, p75)."""
    leads = []
    for a in bad:
        start, end = tracker.first_warning.get(a), tracker.reached_bad.get(a)
        if start is not None and end is not None:
            leads.append((end - start) / DAY_MS)
    if not leads:
        return None
    q = statistics.quantiles(leads, n=4) if len(leads) > 1 else [leads[0]] * 3
    return {"p25": q[0], "median": statistics.median(leads), "p75": q[2], "accounts": float(len(leads))}


class Judge:
    """Sees every result replay applies (a :class:`riskmon.streams.replay.Observer`): the graded statements,
    and each account's score and state strictly before its outcome."""

    def __init__(self, truth: list[dict[str, Any]] | None, bad_dpd: int) -> None:
        self.truth = truth
        # Without a truth file the outcome is the statement's: the event that shows it bad (not an
        # earlier report of arrears on an account whose statements the log does not carry).
        self.tracker = EarlyWarningTracker(bad_dpd if truth is not None else 1 << 30, outcome_times(truth or []))
        self.graded: set[str] = set()
        self.xs: list[list[float]] = []
        self.ys: list[int] = []
        self.scores: list[float] = []
        self.labels: list[int] = []

    def judged(self) -> tuple[list[str], set[str]]:
        """(the accounts judged, sorted; the bad ones): the truth file's, or those with graded statements."""
        if self.truth is not None:
            return sorted({t["account_id"] for t in self.truth}), {t["account_id"] for t in self.truth if t["defaults"]}
        return sorted(self.graded), set(self.tracker.reached_bad)

    def observe(self, ts: int, r: StepResult) -> None:
        s = r.state
        if r.outcomes:
            self.graded.add(s["id"])
            if self.truth is None and any(o.default for o in r.outcomes):
                self.tracker.reached_bad.setdefault(s["id"], ts)  # this event is the outcome: it does not count
        self.tracker.observe(s["id"], s["score"] if r.model_ready else None, s["dpd"], SEVERITY[s["status"]], ts)
        for o in r.outcomes:
            self.xs.append(o.features)
            self.ys.append(int(o.default))
            if o.score is not None:
                self.scores.append(o.score)
                self.labels.append(int(o.default))


def evaluate_log(path: str | Path, truth: list[dict[str, Any]] | None = None, partitions: int = 4,
                 policy: Policy | None = None, spec: FeatureSpec | None = None, bad_dpd: int = 30,
                 folds: int = 5, progress: bool = False, model: RiskModel | None = None,
                 model_base: str = "", portfolio: bool = PORTFOLIO_BY_DEFAULT) -> LogEvaluation:
    """Replay ``path`` through the core and judge it (see the module's docstring); ``model``: a warm start."""
    judge = Judge(truth, bad_dpd)
    with open(os.devnull, "wb") as sink:
        summary = replay(path, sink, partitions=partitions, policy=policy, bad_dpd=bad_dpd, collector=judge, spec=spec,
                         progress=progress, model=model, model_base=model_base, portfolio=portfolio)
    tracker = judge.tracker
    accounts, bad = judge.judged()
    y_acc = [int(a in bad) for a in accounts]
    peak = [tracker.peak.get(a, 0.0) for a in accounts]
    warned = {a for a in accounts if tracker.worst_state.get(a, 0) >= 1}
    n_bad = sum(y_acc)
    n_good = len(accounts) - n_bad
    lead = lead_days(tracker, bad)
    ys = judge.ys
    res = LogEvaluation(
        events=summary.events, rejected=sum(summary.rejected.values()), statements=len(ys), bad_statements=sum(ys),
        accounts=len(accounts), bad_accounts=n_bad, prequential_auc=roc_auc(judge.labels, judge.scores),
        account_auc=roc_auc(y_acc, peak), warned_bad=len(warned & bad) / n_bad if n_bad else 0.0,
        warned_good=len(warned - bad) / n_good if n_good else 0.0, lead_days=lead, folds=folds,
    )
    if judge.xs and folds > 1:
        res.offline = _offline_cv(np.array(judge.xs, dtype=float), np.array(ys, dtype=int), folds)
    return res


def format_log_evaluation(r: LogEvaluation, source: str) -> str:
    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    lines = [
        f"{source}: {r.events} events ({r.rejected} rejected), {r.accounts} accounts ({r.bad_accounts} bad), "
        f"{r.statements} statements graded ({r.bad_statements} bad)",
        "",
        f"{'measure':<68} {'value':>8}",
        f"{'online: prequential AUC over the statements':<68} {f(r.prequential_auc):>8}",
        f"{'online: account AUC of the peak score before the outcome':<68} {f(r.account_auc):>8}",
    ]
    for name, auc in r.offline.items():
        label = f"offline {name} on the monitor's features ({r.folds}-fold CV)"
        lines.append(f"{label:<68} {f(auc):>8}")
    lines += [
        f"{'bad accounts warned (or worse) before the outcome':<68} {r.warned_bad:>8.1%}",
        f"{'good accounts warned (or worse)':<68} {r.warned_good:>8.1%}",
    ]
    if r.lead_days:
        lines.append(f"{'lead time, first warning to outcome (days, p25/median/p75)':<68} "
                     f"{r.lead_days['p25']:.0f}/{r.lead_days['median']:.0f}/{r.lead_days['p75']:.0f}")
    return "\n".join(lines)
