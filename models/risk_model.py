"""The online probability-of-default model: scaled logistic regression in River.

Defaults are rare, so positives are weighted by the running ratio of goods to
bads (capped); the log-odds are then shifted back by log(weight) (prior
correction) so the score stays a probability a risk team can threshold.

>>> m = RiskModel()
>>> for i in range(200):
...     m.learn_one({"dpd": float(i % 4)}, i % 4 == 3)
>>> m.predict_proba_one({"dpd": 3.0})[True] > 0.5 > m.predict_proba_one({"dpd": 0.0})[True]
True
"""
from __future__ import annotations

import math
import pickle
from typing import Any

from river import base, linear_model, optim, preprocessing

__all__ = ["RiskModel", "dumps_model", "loads_model"]


class RiskModel(base.Classifier):
    """StandardScaler -> LogisticRegression with class weighting and prior correction.

    Parameters
    ----------
    learning_rate
        SGD step size for weights and intercept.
    l2
        L2 penalty.
    max_positive_weight
        Cap on the weight given to a default relative to a good outcome.
    """

    def __init__(self, learning_rate: float = 0.05, l2: float = 1e-4, max_positive_weight: float = 20.0) -> None:
        self.learning_rate = learning_rate
        self.l2 = l2
        self.max_positive_weight = max_positive_weight
        self._scaler = preprocessing.StandardScaler()
        self._clf = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), l2=l2, intercept_lr=learning_rate
        )
        self._n_pos = 0
        self._n_neg = 0

    @property
    def _multiclass(self) -> bool:
        return False

    @property
    def n_learned(self) -> int:
        """Outcomes learned so far."""
        return self._n_pos + self._n_neg

    def _positive_weight(self) -> float:
        return min(max((self._n_neg + 1) / (self._n_pos + 1), 1.0), self.max_positive_weight)

    def learn_one(self, x: dict[str, float], y: bool, w: float = 1.0) -> None:
        if y:
            self._n_pos += 1
        else:
            self._n_neg += 1
        self._scaler.learn_one(x)
        weight = w * (self._positive_weight() if y else 1.0)
        self._clf.learn_one(self._scaler.transform_one(x), y, w=weight)

    def log_odds(self, x: dict[str, float]) -> float:
        """Prior-corrected log-odds of default."""
        xs = self._scaler.transform_one(x)
        weights = self._clf._weights
        z = self._clf.intercept + sum(weights.get(k, 0.0) * v for k, v in xs.items())
        return z - math.log(self._positive_weight())

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:
        z = max(min(self.log_odds(x), 30.0), -30.0)
        p = 1.0 / (1.0 + math.exp(-z))
        return {False: 1.0 - p, True: p}

    def contributions(self, x: dict[str, float]) -> dict[str, float]:
        """Each feature's push on the log-odds (weight x scaled value)."""
        xs = self._scaler.transform_one(x)
        weights = self._clf._weights
        return {k: weights.get(k, 0.0) * v for k, v in xs.items()}

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {}


def dumps_model(model: RiskModel) -> bytes:
    """Checkpoint bytes (pickle); :func:`loads_model` gives a model with identical scores."""
    return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def loads_model(data: bytes) -> RiskModel:
    model = pickle.loads(data)
    if not isinstance(model, RiskModel):
        raise TypeError(f"checkpoint holds a {type(model).__name__}, not a RiskModel")
    return model
