"""A model file: a learned model with a record of what it learned from (a warm start).

A lender starts with history. ``riskmon train LOG --out MODEL`` replays a
labelled log through the core and keeps the model the monitor learned from its
outcomes, with the features as they stood at each statement (point in time);
a worker (``RISKMON_MODEL_FILE``) and replay (``--model``) then start every
partition from it instead of from nothing. Without a file the expert scorecard
covers the cold start (:mod:`riskmon.models.risk_model`).

The file is one line of JSON (what the model learned from, below) followed by
the pickled model. Pickle runs code when it loads: a model file is
configuration, to be taken only from where the policy comes from, never from
the event feed. The header's sha256 of the model bytes is checked on load, so
a truncated or altered file is refused in one line rather than half-read.

>>> import io, pathlib, tempfile
>>> from riskmon.models.risk_model import RiskModel
>>> m = RiskModel()
>>> m.learn_one({"dpd_months": 1.0}, True)
>>> info = lineage(m, ("dpd_months",), "fs-v1", outcomes=1, defaults=1, first_ts=0, last_ts=0, source="x.jsonl")
>>> with tempfile.TemporaryDirectory() as d:
...     path = pathlib.Path(d) / "m.model"
...     save_model(path, m, info)
...     back, got = load_model(path, ("dpd_months",))
>>> got == info, back.n_learned
(True, 1)
"""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from .codec import format_ts
from .risk_model import RiskModel

__all__ = ["FORMAT", "ModelFileError", "ModelInfo", "lineage", "load_model", "save_model"]

FORMAT = "riskmon-model/1"


class ModelFileError(ValueError):
    """A model file that cannot be used, and why (one line)."""


@dataclass(frozen=True)
class ModelInfo:
    """What a model file's model learned from: enough to say which decisions it made and to roll back."""

    version: str  # "warm-" + the first 12 hex digits of the model bytes' sha256: decisions carry it
    learner: str  # the model's class and settings
    features: tuple[str, ...]  # the names it scores, in order (the feature specification's)
    feature_spec: str  # that specification's version
    outcomes: int  # outcomes learned
    defaults: int  # of them, defaults
    first_ts: int | None  # event-time span of those outcomes (ms), None if none
    last_ts: int | None
    source: str  # the log it was trained on
    sha256: str  # of the model bytes

    def line(self) -> str:
        span = f"{format_ts(self.first_ts)} .. {format_ts(self.last_ts)}" if self.first_ts is not None and self.last_ts is not None else "none"
        return (f"model {self.version}: {self.learner}, {self.outcomes} outcomes ({self.defaults} defaults), "
                f"event time {span}, features {self.feature_spec} ({len(self.features)}), from {self.source}")


def _learner(model: RiskModel) -> str:
    if model.learner == "batch":
        return (f"{type(model).__name__}(learner=batch, every={model.batch_every}, window={model.batch_window}, "
                f"l2={model.l2_batch}, clip={model.clip})")
    if model.learner == "tree":
        return f"{type(model).__name__}(learner=tree: River HoeffdingAdaptiveTreeClassifier)"
    return (f"{type(model).__name__}(optimizer={model.optimizer}, learning_rate={model.learning_rate}, l2={model.l2}, "
            f"clip={model.clip})")


def lineage(model: RiskModel, features: tuple[str, ...], feature_spec: str, *, outcomes: int, defaults: int,
            first_ts: int | None, last_ts: int | None, source: str) -> ModelInfo:
    """The record :func:`save_model` writes beside ``model``."""
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    digest = hashlib.sha256(blob).hexdigest()
    return ModelInfo(f"warm-{digest[:12]}", _learner(model), tuple(features), feature_spec, outcomes, defaults,
                     first_ts, last_ts, source, digest)


def save_model(path: str | Path, model: RiskModel, info: ModelInfo) -> None:
    """Write ``model`` and its record; the bytes must be the ones ``info`` was made from."""
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    if hashlib.sha256(blob).hexdigest() != info.sha256:
        raise ModelFileError("the model changed after its record was made")
    header = orjson.dumps({"format": FORMAT, **asdict(info)})
    Path(path).write_bytes(header + b"\n" + blob)


def load_model(path: str | Path, features: tuple[str, ...] | None = None) -> tuple[RiskModel, ModelInfo]:
    """The model and its record; :class:`ModelFileError` if the file is not one, is damaged, or was
    trained on other features than ``features`` (the feature specification in force)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelFileError(f"model file {path}: {exc.strerror or exc}") from None
    head, sep, blob = data.partition(b"\n")
    try:
        meta: Any = orjson.loads(head) if sep else None
    except orjson.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"model file {path}: not a riskmon model file (write one with `riskmon train`)")
    fields = {k: v for k, v in meta.items() if k != "format"}
    try:
        info = ModelInfo(**{**fields, "features": tuple(fields.get("features") or ())})
    except TypeError as exc:
        raise ModelFileError(f"model file {path}: its record is incomplete ({exc})") from None
    if hashlib.sha256(blob).hexdigest() != info.sha256:
        raise ModelFileError(f"model file {path}: the model bytes do not match their sha256 (truncated or altered)")
    if features is not None and tuple(features) != info.features:
        missing = [n for n in features if n not in info.features]
        extra = [n for n in info.features if n not in features]
        raise ModelFileError(
            f"model file {path} was trained on feature specification {info.feature_spec!r}, not the one in force "
            f"(missing: {', '.join(missing) or 'none'}; not in force: {', '.join(extra) or 'none'}; or another order): "
            f"train it again with these features")
    try:
        model = pickle.loads(blob)  # noqa: S301 - a model file is configuration (see the module's docstring)
    except Exception as exc:  # a file from another riskmon, or one written wrong: said in one line
        raise ModelFileError(f"model file {path}: cannot be read by this riskmon ({type(exc).__name__}: "
                             f"{str(exc)[:80]}); train it again") from None
    if not isinstance(model, RiskModel):
        raise ModelFileError(f"model file {path}: holds a {type(model).__name__}, not a RiskModel")
    return model, info
