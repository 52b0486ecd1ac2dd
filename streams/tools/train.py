"""`riskmon train LOG --out MODEL`: a model learned from a labelled history, to start the monitor from.

The log is replayed through the core in one partition, as replay runs it: the statements it
holds become outcomes as they are settled or reach ``bad_dpd`` days past due, each with the
features as they stood at the statement (point in time), and the one model learns from all of
them in event-time order, exactly as a partition of the monitor would have. What it learned from
(outcomes, defaults, their event-time span, the features, the log's sha256) is written beside it
(:mod:`riskmon.models.model_file`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from riskmon.models.engine import Engine
from riskmon.models.featurespec import FeatureSpec
from riskmon.models.model_file import ModelInfo, lineage, save_model
from riskmon.models.policy import Policy
from riskmon.models.risk_model import RiskModel

from ..replay import ReplaySummary, apply_log

__all__ = ["train"]


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def train(events_path: str | Path, out: str | Path, policy: Policy | None = None, spec: FeatureSpec | None = None,
          bad_dpd: int = 30, progress: bool = False, learner: str = "logistic") -> tuple[ModelInfo, ReplaySummary]:
    """Learn from the log's outcomes and write the model file; ValueError if the log has none."""
    summary = ReplaySummary()
    engine = Engine(1, policy, bad_dpd=bad_dpd, spec=spec, model=RiskModel(learner=learner))
    outcomes = defaults = 0
    first = last = None
    for ev, results in apply_log(events_path, engine, summary, progress="train" if progress else None):
        for result in results:
            for o in result.outcomes:
                outcomes += 1
                defaults += o.default
                first = ev.ts if first is None else first
                last = ev.ts
    if not outcomes:
        raise ValueError(f"{events_path} has no outcomes to learn from: no statement (instalment_due) in it was "
                         f"settled or reached {bad_dpd} days past due")
    model, spec = engine.finish(), engine.monitors[0].spec  # every outcome learned, its epoch closed or not
    info = lineage(model, spec.names, spec.version, outcomes=outcomes, defaults=defaults,
                   first_ts=first, last_ts=last, source=f"{Path(events_path).name} (sha256 {_sha256(events_path)[:16]})")
    save_model(out, model, info)
    return info, summary
