"""`riskmon evaluate uci`: the core on real data, judged against offline references.

Replays the UCI credit-default clients (models/uci.py) through the core with one
model, then compares the online model's prequential scores with scikit-learn
models trained the usual batch way on the earlier cohorts and tested on the
later ones, and measures the early-warning policy against the real outcomes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from riskmon.models.codec import decode_obj
from riskmon.models.engine import Engine
from riskmon.models.events import Event, event_order
from riskmon.models.featurespec import FeatureSpec
from riskmon.models.policy import Policy, default_policy
from riskmon.models.portfolio import PORTFOLIO_BY_DEFAULT
from riskmon.models.quality import ks_statistic, roc_auc
from riskmon.models.risk_model import RiskModel
from riskmon.models.uci import COHORTS, DEFAULT_COLUMN, MONTHS, client_events, cohort_of, load_rows
from riskmon.models.units import DAY_MS
from riskmon.models.vocabulary import SEVERITY, STATE_OF_ACTION

from .evaluate import reference_models


__all__ = ["DEFAULT_DATA", "UciResult", "evaluate_uci", "format_result"]

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "uci-credit-default" / "default_of_credit_card_clients.csv"
RAW_COLUMNS = ["LIMIT_BAL", "SEX", "EDUCATION", "MARRIAGE", "AGE"] + [c for m in MONTHS for c in m]
_SEVERITY = {action: SEVERITY[state] for action, state in STATE_OF_ACTION.items()}


@dataclass
class UciResult:
    clients: int
    events: int
    seconds: float
    test_cohorts: list[int]
    auc: dict[str, dict[str, float | None]] = field(default_factory=dict)  # model -> {"all"/"test": auc}
    ks: dict[str, float | None] = field(default_factory=dict)
    calibration: list[tuple[float, float, int]] = field(default_factory=list)  # decile: mean score, default rate, n
    ews: dict[str, Any] = field(default_factory=dict)
    policy_version: str = ""  # the policy judged (its version, the breaker off)
    warm_start: dict[str, Any] = field(default_factory=dict)  # see warm_start()
    scores: dict[str, Any] = field(default_factory=dict)  # for plots


def _offline(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> dict[str, np.ndarray]:
    return {name: m.fit(x_train, y_train).predict_proba(x_test)[:, 1] for name, m in reference_models().items()}


def evaluate_uci(path: str | Path = DEFAULT_DATA, cohorts: int = COHORTS, test_cohorts: int = 4,
                 learner: str = "logistic", policy: Policy | None = None, spec: FeatureSpec | None = None,
                 partitions: int = 1, portfolio: bool = PORTFOLIO_BY_DEFAULT) -> UciResult:
    """``learner``: the learned model's kind (riskmon.models.risk_model.RiskModel), from nothing; ``policy``
    and ``spec``: the early-warning policy and the features (None: the shipped ones); ``partitions``: shards;
    ``portfolio``: one model for them all, learned by the portfolio's trainer in daily versions (the default),
    or one model per shard (with one shard, a model that learns each outcome as it comes)."""
    t0 = time.perf_counter()
    rows = load_rows(path)
    by_id = {f"UCI{r['ID']:05d}": r for r in rows}
    log = _log(rows, cohorts)
    # The breaker (models/breaker.py) is off here: it holds closures for a person to review, and this
    # evaluation judges the model and the policy. UCI's closures come in monthly waves that start from
    # nothing months into the data, which would trip it (with it on and the shipped policy and a model per
    # partition: 173 closures went through instead of 517, 345 held).
    base = policy or default_policy()
    policy = base.updated({"breaker.closure": 0, "breaker.limit_reduction": 0}, f"{base.version}+no-breaker")
    engine = Engine(partitions=partitions, policy=policy, model=RiskModel(learner=learner), spec=spec,
                    portfolio=portfolio)
    outcome: dict[str, tuple[float, list[float], bool, int]] = {}  # aid -> (score, features, default, ts)
    first: dict[str, dict[int, int]] = {}  # aid -> severity -> first event time
    for ev in log:
        for result in engine.process(ev):
            for o in result.outcomes:
                outcome[ev.account_id] = (o.score if o.score is not None else 0.0, o.features, o.default, ev.ts)
            for d in result.decisions:
                sev = _SEVERITY.get(d.action)
                if sev:
                    first.setdefault(d.account_id, {}).setdefault(sev, d.event_ts)
    seconds = time.perf_counter() - t0
    res = UciResult(len(rows), len(log), seconds, list(range(cohorts - test_cohorts, cohorts)),
                    policy_version=policy.version)

    aids = sorted(outcome)
    y = np.array([outcome[a][2] for a in aids], dtype=int)
    assert all(bool(by_id[a][DEFAULT_COLUMN]) == bool(outcome[a][2]) for a in aids), "the core's label is the data's"
    online = np.array([outcome[a][0] for a in aids])
    core_x = np.array([outcome[a][1] for a in aids])
    raw_x = np.array([[by_id[a][c] for c in RAW_COLUMNS] for a in aids], dtype=float)
    cohort = np.array([cohort_of(by_id[a], cohorts) for a in aids])
    test = cohort >= cohorts - test_cohorts
    train = ~test

    res.auc["online (River, prequential)"] = {"all": roc_auc(list(y), list(online)), "test": roc_auc(list(y[test]), list(online[test]))}
    res.ks["online (River, prequential)"] = ks_statistic(list(y[test]), list(online[test]))
    res.scores = {"y_test": y[test], "online (River, prequential)": online[test]}
    for features, x in (("UCI columns", raw_x), ("core features", core_x)):
        for name, p in _offline(x[train], y[train], x[test]).items():
            key = f"offline {name} on {features}"
            res.auc[key] = {"all": None, "test": roc_auc(list(y[test]), list(p))}
            res.ks[key] = ks_statistic(list(y[test]), list(p))
            res.scores[key] = p

    # Calibration of the online score on the test cohorts, by decile.
    order = np.argsort(online[test], kind="stable")
    for chunk in np.array_split(order, 10):
        res.calibration.append((float(online[test][chunk].mean()), float(y[test][chunk].mean()), int(len(chunk))))

    # Early warning against the real outcome. The default falls due with the
    # September statement: lead time is counted back from that due date.
    due = {a: outcome[a][3] - 32 * DAY_MS for a in aids}
    defaulters = [a for a in aids if outcome[a][2]]
    goods = [a for a in aids if not outcome[a][2]]

    def lead_months(a: str, sev: int) -> float | None:
        ts = min((t for s, t in first.get(a, {}).items() if s >= sev), default=None)
        if ts is None or ts > due[a]:
            return None
        return (due[a] - ts) / (30 * DAY_MS)

    def share(items: list[str], pred: Any) -> float:
        return sum(1 for a in items if pred(a)) / max(len(items), 1)

    warn = [lead_months(a, 1) for a in defaulters]
    limit = [lead_months(a, 2) for a in defaulters]
    closed = {a for a in aids if lead_months(a, 4) is not None}
    res.ews = {
        "defaulters": len(defaulters),
        "goods": len(goods),
        "warned_before_default": share(defaulters, lambda a: lead_months(a, 1) is not None),
        "warning_lead_months": _quantiles([w for w in warn if w is not None]),
        "limit_action_before_default": share(defaulters, lambda a: lead_months(a, 2) is not None),
        "limit_lead_months": _quantiles([w for w in limit if w is not None]),
        "false_warning_rate": share(goods, lambda a: lead_months(a, 1) is not None),
        "false_limit_rate": share(goods, lambda a: lead_months(a, 2) is not None),
        "false_closure_rate": share(goods, lambda a: a in closed),
        "closure_precision": (sum(1 for a in closed if outcome[a][2]) / len(closed)) if closed else None,
        "closure_recall": share(defaulters, lambda a: a in closed),
        "closures": len(closed),
    }
    res.warm_start = warm_start(rows, cohorts, test_cohorts, policy, learner, spec, portfolio)
    return res


def _log(rows: list[dict[str, int]], cohorts: int) -> list[Event]:
    """The clients' events, in the order the core applies them."""
    log = []
    for r in rows:
        for e in client_events(r, cohorts):
            ev = decode_obj(e)
            log.append((event_order(ev.ts, ev.type, len(log)), ev))
    log.sort(key=lambda x: x[0])
    return [ev for _, ev in log]


def warm_start(rows: list[dict[str, int]], cohorts: int, test_cohorts: int, policy: Policy,
               learner: str = "logistic", spec: FeatureSpec | None = None,
               portfolio: bool = PORTFOLIO_BY_DEFAULT) -> dict[str, Any]:
    """A lender with history against one without: a model learned from the earlier cohorts' clients (as
    `riskmon train` learns, in one partition, from every outcome in event-time order), then the later
    cohorts' clients alone replayed twice, from nothing and from that model; the prequential AUC of each
    on the later clients' statements."""
    late = cohorts - test_cohorts
    trainer = Engine(1, policy, model=RiskModel(learner=learner), spec=spec, portfolio=portfolio)
    trained = 0
    for ev in _log([r for r in rows if cohort_of(r, cohorts) < late], cohorts):
        trained += sum(len(result.outcomes) for result in trainer.process(ev))
    later = _log([r for r in rows if cohort_of(r, cohorts) >= late], cohorts)

    def prequential(model: RiskModel | None) -> float | None:
        engine = Engine(1, policy, model=model or RiskModel(learner=learner), spec=spec, portfolio=portfolio)
        ys: list[bool] = []
        scores: list[float] = []
        for ev in later:
            for result in engine.process(ev):
                for o in result.outcomes:
                    if o.score is not None:
                        ys.append(o.default)
                        scores.append(o.score)
        return roc_auc(ys, scores)

    return {"trained_outcomes": trained, "cold": prequential(None), "warm": prequential(trainer.finish())}


def _quantiles(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    q = np.quantile(np.array(xs), [0.25, 0.5, 0.75])
    return {"p25": float(q[0]), "median": float(q[1]), "p75": float(q[2])}


def format_result(r: UciResult) -> str:
    def f(x: float | None, pct: bool = False) -> str:
        return "n/a" if x is None else (f"{x:.1%}" if pct else f"{x:.3f}")

    lines = [
        f"UCI default of credit card clients (Yeh & Lien 2009, CC BY 4.0): {r.clients} clients, {r.events} events, "
        f"replayed through the core in {r.seconds:.0f} s; test = cohorts {r.test_cohorts[0]}-{r.test_cohorts[-1]}",
        "",
        f"{'model':<52} {'AUC all':>8} {'AUC test':>9} {'KS test':>8}",
    ]
    for name, a in r.auc.items():
        lines.append(f"{name:<52} {f(a['all']):>8} {f(a['test']):>9} {f(r.ks.get(name)):>8}")
    e = r.ews
    wl, ll = e["warning_lead_months"] or {}, e["limit_lead_months"] or {}
    lines += [
        "",
        f"early warning ({e['defaulters']} defaulters, {e['goods']} non-defaulters; policy {r.policy_version}: "
        "without the mass-action breaker):",
        f"  defaulters warned before the default: {f(e['warned_before_default'], True)}; lead months p25/median/p75: "
        f"{wl.get('p25', 0):.1f}/{wl.get('median', 0):.1f}/{wl.get('p75', 0):.1f}",
        f"  defaulters with a limit action or worse before it: {f(e['limit_action_before_default'], True)}; lead months "
        f"p25/median/p75: {ll.get('p25', 0):.1f}/{ll.get('median', 0):.1f}/{ll.get('p75', 0):.1f}",
        f"  non-defaulters warned: {f(e['false_warning_rate'], True)}; limit action or worse: {f(e['false_limit_rate'], True)}; "
        f"closed: {f(e['false_closure_rate'], True)}",
        f"  closures before the default: {e['closures']}, precision {f(e['closure_precision'])}, recall {f(e['closure_recall'])}",
        "",
        f"warm start: the test cohorts' clients alone, prequential AUC from nothing {f(r.warm_start['cold'])}, "
        f"from a model trained on the earlier cohorts ({r.warm_start['trained_outcomes']} outcomes) {f(r.warm_start['warm'])}",
        "",
        "calibration of the online score on the test cohorts (decile: mean score -> observed default rate):",
    ]
    for i, (p, o, n) in enumerate(r.calibration, 1):
        lines.append(f"  {i:>2}: {p:.3f} -> {o:.3f} (n={n})")
    return "\n".join(lines)


def plot_result(r: UciResult, out_dir: str | Path) -> list[Path]:
    """ROC curves on the test cohorts, calibration and early-warning lead times, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    y = r.scores["y_test"]
    for name, p in r.scores.items():
        if name == "y_test":
            continue
        fpr, tpr, _ = roc_curve(y, p)
        label = name.replace("offline ", "").replace(" (River, prequential)", "")
        axes[0].plot(fpr, tpr, lw=2 if name.startswith("online") else 1, label=f"{label} ({r.auc[name]['test']:.3f})")
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(title="ROC on the test cohorts", xlabel="false positive rate", ylabel="true positive rate")
    axes[0].legend(fontsize=7, loc="lower right")
    pred = [c[0] for c in r.calibration]
    obs = [c[1] for c in r.calibration]
    axes[1].plot(pred, obs, "o-", label="online model, by decile")
    axes[1].plot([0, 1], [0, 1], "k:", lw=0.8, label="perfect calibration")
    axes[1].set(title="Calibration on the test cohorts", xlabel="mean predicted PD", ylabel="observed default rate")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path = out / "uci_model.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def main_evaluate(args: Any, policy: Policy | None = None, spec: FeatureSpec | None = None,
                  portfolio: bool = PORTFOLIO_BY_DEFAULT) -> int:
    import json
    import sys

    path = Path(args.data) if args.data else DEFAULT_DATA
    if not path.is_file():
        raise ValueError(f"no UCI data at {path} (give --data PATH to default_of_credit_card_clients.csv)")
    if getattr(args, "model", None):
        raise ValueError("`riskmon evaluate uci` learns from nothing (and warm-starts from its own earlier cohorts): "
                         "--model does not apply; --learner does")
    r = evaluate_uci(path, args.cohorts, args.test_cohorts, getattr(args, "learner", None) or "logistic", policy, spec,
                     getattr(args, "partitions", None) or 1, portfolio)
    print(format_result(r))
    if args.plots:
        for p in plot_result(r, args.plots):
            print(f"plot: {p}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"auc": r.auc, "ks": r.ks, "calibration": r.calibration, "ews": r.ews, "warm_start": r.warm_start,
                       "policy_version": r.policy_version,
                       "clients": r.clients, "events": r.events, "seconds": r.seconds}, f, indent=2)
    return 0
