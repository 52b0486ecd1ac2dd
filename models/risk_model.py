"""The online probability-of-default model: scaled logistic regression in River.

Outcomes arrive late, and bad ones latest of all (30+ days past due is 50 days
after the statement), so a model that starts empty is blind for its first
months. Like a lender launching a new portfolio, it starts from an expert
scorecard (:data:`EXPERT_SCORECARD`: signs and sizes set by credit judgement,
not fitted to any data here) and hands over to the learned model on evidence,
not on a count: each outcome is first scored by both (the learned model as it
stood before learning it, prequentially), and every :data:`HANDOVER_EVERY`
outcomes the two are compared by ROC AUC on the latest :data:`HANDOVER_WINDOW`
(once they hold :data:`HANDOVER_MIN_EACH` defaults and as many goods). The
learned model gives the score from the first comparison it wins, and hands back
only if it later falls :data:`HANDBACK_MARGIN` behind.

Defaults are rare, so positives are weighted by the running ratio of goods to
bads (capped); the log-odds are then shifted back by log(weight) (prior
correction) so the score stays a probability a risk team can threshold.

>>> m = RiskModel(expert=False)
>>> for i in range(200):
...     m.learn_one({"dpd": float(i % 4)}, i % 4 == 3)
>>> m.predict_proba_one({"dpd": 3.0})[True] > m.predict_proba_one({"dpd": 0.0})[True]
True
"""
from __future__ import annotations

import math
import pickle
from collections import deque
from typing import Any

# River's signatures take dict[Hashable, Any]; dict is invariant, so match with Any keys.
Features = dict[Any, Any]

import numpy as np
from river import base, linear_model, optim, preprocessing, tree

from .quality import paired_auc_z, roc_auc
from .vocabulary import LEARNERS

__all__ = ["EXPERT_SCORECARD", "EXPERT_INTERCEPT", "HANDOVER_EVERY", "HANDOVER_WINDOW", "RiskModel",
           "dumps_model", "loads_model"]


HANDOVER_WINDOW = 1000  # the latest outcomes the learned model and the scorecard are compared on
HANDOVER_EVERY = 25  # outcomes between comparisons
HANDOVER_MIN_EACH = 200  # defaults, and goods, the window must hold before a comparison counts
HANDBACK_MARGIN = 0.02  # the learned model hands back only when its AUC falls this far behind
HANDOVER_Z = 1.645  # it takes over only when it ranks better at the one-sided 5% level (DeLong's paired test)

# Log-odds per unit of each raw feature (see models.features): arrears, partial
# and missed payments, utilisation and borrowing velocity raise the risk; a
# history of on-time payment and a healthy payment-to-due ratio lower it.
EXPERT_INTERCEPT = -4.0
EXPERT_SCORECARD = {
    "dpd_months": 1.5, "in_arrears": 1.0, "arrears_over_30": 1.0, "utilisation": 1.5,
    "late_payments": 0.8, "missed_instalments": 0.8, "partial_payments": 1.0,
    "on_time_payments": -0.5, "payment_to_due": -1.0, "limit_requests_30d": 0.8,
    "limit_requests_24h": 1.0, "drawdowns_24h": 0.5, "unpaid_due_to_limit": 1.0,
    "months_since_on_time": 0.3, "repaid_share_30d": -1.0,
    # The linked current account, where the bank sees one (0 where it does not, so a line without
    # one scores as before): overdrawn days and sanction interest raise the risk, a low or negative
    # balance a little (per unit of signed log balance: -10,000 overdrawn reads -9.2, +0.46 log-odds),
    # regular income lowers it. Each is modest: living close to zero is common among customers who pay.
    "days_below_zero_90d": 0.03, "penalty_interest_180d": 0.3, "min_balance_90d": -0.05,
    "income_months_180d": -0.5,
}


class RiskModel(base.Classifier):
    """StandardScaler -> LogisticRegression with class weighting and prior correction.

    Parameters
    ----------
    learning_rate
        Step size for weights and intercept.
    optimizer
        ``"adam"`` (per-feature step sizes: the declared features differ in
        scale and in how often they move) or ``"sgd"``. On the UCI data with
        the default features (test-cohort prequential AUC): Adam 0.001 0.776
        (0.0005: 0.775, 0.002: 0.774); SGD 0.001 0.775, 0.002 0.774, 0.003
        0.771, 0.005 0.766; AdaGrad 0.01 0.770.
    l2
        L2 penalty.
    max_positive_weight
        Cap on the weight given to a default relative to a good outcome.
    clip
        Scaled features are clipped to [-clip, clip]. Rare events (limit
        requests, arrears) have a tiny spread, so their scaled values are huge
        when they do occur; unclipped, SGD gave them weights above 20 and the
        prequential AUC on the simulated log fell from 0.99 to 0.59.
    expert
        Start from the expert scorecard and hand over on evidence (False: the
        learned model alone from the start).
    learner
        ``"logistic"``: the scaled logistic regression above, learning one
        outcome at a time. ``"batch"``: the same model refitted from scratch
        (L2 logistic regression by Newton's method, ``l2_batch``) on the latest
        ``batch_window`` outcomes every ``batch_every`` outcomes, with the
        scaler as it stood at the fit; it keeps those outcomes' features (about
        ``batch_window`` x 50 numbers in every snapshot). ``"tree"``: River's
        Hoeffding adaptive tree on the raw features, weighted like the others;
        its score has no per-feature drivers, so decisions give the rules'
        reasons and the scorecard's pushes only. The README compares them.
    """

    def __init__(
        self,
        learning_rate: float = 0.001,
        l2: float = 1e-4,
        max_positive_weight: float = 20.0,
        clip: float = 4.0,
        expert: bool = True,
        optimizer: str = "adam",
        learner: str = "logistic",
        batch_every: int = 250,
        batch_window: int = 5000,
        l2_batch: float = 1.0,
    ) -> None:
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', not {optimizer!r}")
        if learner not in LEARNERS:
            raise ValueError(f"learner must be one of {', '.join(LEARNERS)}, not {learner!r}")
        if batch_every < 1 or batch_window < 2:
            raise ValueError("batch_every must be at least 1 and batch_window at least 2")
        self.learner = learner
        self.batch_every = batch_every
        self.batch_window = batch_window
        self.l2_batch = l2_batch
        self._buffer: deque[tuple[Features, bool]] | None = deque(maxlen=batch_window) if learner == "batch" else None
        # The last fit of the batch learner: (means, variances, weights, intercept, log of the positive weight it used).
        self._fit: tuple[dict[str, float], dict[str, float], dict[str, float], float, float] | None = None
        self._tree = tree.HoeffdingAdaptiveTreeClassifier(seed=7) if learner == "tree" else None
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.l2 = l2
        self.max_positive_weight = max_positive_weight
        self.clip = clip
        self.expert = expert
        self._handed = not expert  # the learned model gives the score
        self._evidence: deque[tuple[bool, float, float]] = deque(maxlen=HANDOVER_WINDOW)  # (default, learned, expert)
        self.handover_judged: tuple[float | None, float | None] = (None, None)  # the last comparison's AUCs
        self._scaler = preprocessing.StandardScaler()
        opt = optim.Adam(learning_rate) if optimizer == "adam" else optim.SGD(learning_rate)
        self._clf = linear_model.LogisticRegression(optimizer=opt, l2=l2, intercept_lr=learning_rate)
        self._n_pos = 0
        self._n_neg = 0
        self._fast: Any = None

    @property
    def _multiclass(self) -> bool:
        return False

    @property
    def n_learned(self) -> int:
        """Outcomes learned so far."""
        return self._n_pos + self._n_neg

    def _positive_weight(self) -> float:
        return min(max((self._n_neg + 1) / (self._n_pos + 1), 1.0), self.max_positive_weight)

    def learn_one(self, x: Features, y: bool | str | int, w: float = 1.0) -> None:
        if self.expert:
            self._weigh_evidence(x, bool(y))
        if y:
            self._n_pos += 1
        else:
            self._n_neg += 1
        self._scaler.learn_one(x)
        weight = w * (self._positive_weight() if y else 1.0)
        if self.learner == "logistic":
            self._clf.learn_one(self._scaled(x), y, w=weight)
        elif self.learner == "batch":
            assert self._buffer is not None
            self._buffer.append((x, bool(y)))
            if self.n_learned % self.batch_every == 0:
                self._refit()
        else:
            assert self._tree is not None
            self._tree.learn_one(x, bool(y), w=weight)
        self._fast = None

    def _refit(self) -> None:
        """Fit the batch learner afresh on the buffered outcomes (deterministic: Newton's method, fixed order)."""
        assert self._buffer is not None
        xs = [x for x, _ in self._buffer]
        y = np.array([yy for _, yy in self._buffer], dtype=float)
        if y.min() == y.max():
            return  # one class only: nothing to separate yet
        means, vars_ = self._scaler.means, self._scaler.vars
        names = sorted({n for x in xs for n in x if vars_.get(n, 0.0) > 0.0})
        m = np.array([means[n] for n in names])
        sd = np.array([vars_[n] ** 0.5 for n in names])
        raw = np.array([[x.get(n, 0.0) for n in names] for x in xs], dtype=float)
        X = np.clip((raw - m) / sd, -self.clip, self.clip)
        X = np.hstack([X, np.ones((len(xs), 1))])
        pos = y.sum()
        pw = min(max((len(y) - pos + 1) / (pos + 1), 1.0), self.max_positive_weight)
        sw = np.where(y > 0, pw, 1.0)
        reg = np.full(X.shape[1], self.l2_batch)
        reg[-1] = 0.0  # the intercept is not penalised
        beta = np.zeros(X.shape[1])
        for _ in range(50):
            p = 1.0 / (1.0 + np.exp(-np.clip(X @ beta, -30, 30)))
            grad = X.T @ (sw * (p - y)) + reg * beta
            hess = (X * (sw * p * (1 - p))[:, None]).T @ X + np.diag(reg + 1e-9)
            step = np.linalg.solve(hess, grad)
            beta -= step
            if float(np.abs(step).max()) < 1e-8:
                break
        self._fit = ({n: float(v) for n, v in zip(names, m)}, {n: vars_[n] for n in names},
                     {n: float(v) for n, v in zip(names, beta[:-1])}, float(beta[-1]), math.log(pw))

    def _linear(self) -> tuple[dict[str, float], dict[str, float], Any, float, float]:
        """The linear learner's (means, variances, weights, intercept, log positive weight) as scoring reads them:
        the online model's live values, or the batch learner's last fit (the scaler as it stood then)."""
        if self.learner == "batch":
            if self._fit is None:
                return {}, {}, {}, 0.0, math.log(self._positive_weight())
            return self._fit
        return self._scaler.means, self._scaler.vars, self._clf.weights, self._clf.intercept, math.log(self._positive_weight())

    def score_vector(self, names: tuple[str, ...], x: list[float]) -> float:
        """``predict_proba_one(dict(zip(names, x)))[True]``, to the last bit, without dicts."""
        _, terms, expert_terms, intercept, log_pw, a = self._terms(names)
        c = self.clip
        learned = expert_p = 0.0
        if a > 0.0 and self._tree is not None:
            learned = _sigmoid(self.log_odds(dict(zip(names, x))))
        elif a > 0.0:
            z = 0.0
            for i, m, sd, w, at_zero in terms:
                xi = x[i]
                if xi:
                    v = (xi - m) / sd
                    z += w * (-c if v < -c else c if v > c else v)  # _clip, written out: this runs on every event
                else:  # most features of most accounts are 0: their term, worked out once, is the same number
                    z += at_zero
            learned = _sigmoid(float(intercept + z) - log_pw)
        if a < 1.0:
            z = 0.0
            for i, e in expert_terms:
                z += e * x[i]
            expert_p = _sigmoid(EXPERT_INTERCEPT + z)
        return _blend(a, learned, expert_p)

    def contributions_vector(self, names: tuple[str, ...], x: list[float]) -> dict[str, float]:
        """:meth:`contributions` of ``dict(zip(names, x))``, the same values, read from the terms scoring uses."""
        _, terms, _, _, _, a = self._terms(names)
        learned = dict.fromkeys(names, 0.0)
        for i, m, sd, w, _ in terms:
            learned[names[i]] = w * _clip((x[i] - m) / sd, self.clip)
        return {n: _blend(a, learned[n], EXPERT_SCORECARD.get(n, 0.0) * v) for n, v in zip(names, x)}

    def _terms(self, names: tuple[str, ...]) -> tuple[Any, ...]:
        """The scaler's and the weights' values laid out for ``names``: scoring runs on every event and
        learning only on outcomes, so they are built after each learn and reused until the next."""
        fast = self.__dict__.get("_fast")
        if fast is None or fast[0] is not names:
            means, vars_, weights, intercept, log_pw = self._linear()
            # Only the terms that can move the score: a feature with no spread scales to 0, and a
            # weight of 0 adds 0 (features a portfolio never sees, like a current account it has not).
            learned_terms = []
            for i, n in enumerate(names):
                sd = vars_[n] ** 0.5 if vars_.get(n, 0.0) else 0.0
                w = weights.get(n, 0.0)
                if sd and w:
                    m = means.get(n, 0.0)
                    learned_terms.append((i, m, sd, w, w * _clip((0.0 - m) / sd, self.clip)))
            fast = self._fast = (
                names,
                tuple(learned_terms),
                tuple((i, EXPERT_SCORECARD[n]) for i, n in enumerate(names) if EXPERT_SCORECARD.get(n, 0.0)),
                intercept,
                log_pw,
                self._learned_share(),
            )
        return fast

    def _scaled(self, x: Features) -> dict[str, float]:
        return {k: _clip(v, self.clip) for k, v in self._scaler.transform_one(x).items()}

    def log_odds(self, x: Features) -> float:
        """Prior-corrected log-odds of default."""
        if self._tree is not None:
            p = min(max(self._tree.predict_proba_one(x).get(True, 0.0), 1e-6), 1.0 - 1e-6)
            return math.log(p / (1.0 - p)) - math.log(self._positive_weight())
        means, vars_, weights, intercept, log_pw = self._linear()
        z = 0.0  # summed as score_vector sums, so that the two agree to the last bit
        for k, v in x.items():
            w = weights.get(k, 0.0)
            var = vars_.get(k, 0.0)
            if w and var:
                z += w * _clip((v - means.get(k, 0.0)) / var ** 0.5, self.clip)
        return float(intercept + z) - log_pw

    def _learned_share(self) -> float:
        if self._handed:
            return 1.0
        # A model saved under the count rule scores with its blend until the first comparison.
        return float(self.__dict__.get("_legacy_share", 0.0))

    @property
    def handed_over(self) -> bool:
        """The learned model gives the score (the scorecard no longer does)."""
        return self._handed

    def _weigh_evidence(self, x: Features, y: bool) -> None:
        """Score the outcome by both before learning it; now and then, let the better one give the score."""
        learned = _sigmoid(self.log_odds(x))
        expert = _sigmoid(EXPERT_INTERCEPT + sum(EXPERT_SCORECARD.get(k, 0.0) * v for k, v in x.items()))
        self._evidence.append((y, learned, expert))
        if (self._n_pos + self._n_neg + 1) % HANDOVER_EVERY:
            return
        ys = [e[0] for e in self._evidence]
        if min(sum(ys), len(ys) - sum(ys)) < HANDOVER_MIN_EACH:
            return
        judged = paired_auc_z(ys, [e[1] for e in self._evidence], [e[2] for e in self._evidence])
        assert judged is not None  # both classes are there
        auc_learned, auc_expert, z = judged
        self.handover_judged = (auc_learned, auc_expert)
        self._handed = z > HANDOVER_Z if not self._handed else auc_learned >= auc_expert - HANDBACK_MARGIN
        self.__dict__.pop("_legacy_share", None)
        self._fast = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "handover_defaults" in state:  # saved before the handover on evidence: a blend up to a count of defaults
            n = state.pop("handover_defaults")
            state.update(expert=n > 0, _handed=n <= 0 or state["_n_pos"] >= n,
                         _evidence=deque(maxlen=HANDOVER_WINDOW), handover_judged=(None, None))
            if 0 < state["_n_pos"] < n:
                state["_legacy_share"] = state["_n_pos"] / n
        for key, default in (("learner", "logistic"), ("batch_every", 250), ("batch_window", 5000), ("l2_batch", 1.0),
                             ("_buffer", None), ("_fit", None), ("_tree", None)):
            state.setdefault(key, default)  # saved before the learner could be chosen: the online logistic one
        self.__dict__.update(state)

    def predict_proba_one(self, x: Features, **kwargs: Any) -> dict[bool | str | int, float]:
        a = self._learned_share()
        learned = _sigmoid(self.log_odds(x)) if a > 0.0 else 0.0
        expert = _sigmoid(EXPERT_INTERCEPT + sum(EXPERT_SCORECARD.get(k, 0.0) * v for k, v in x.items())) if a < 1.0 else 0.0
        p = _blend(a, learned, expert)
        return {False: 1.0 - p, True: p}

    def contributions(self, x: Features) -> dict[str, float]:
        """Each feature's push on the log-odds, blended as the score is (a tree's pushes read 0)."""
        a = self._learned_share()
        means, vars_, weights, _, _ = self._linear() if self._tree is None else ({}, {}, {}, 0.0, 0.0)
        learned = {k: weights.get(k, 0.0) * _clip((v - means.get(k, 0.0)) / vars_[k] ** 0.5, self.clip)
                   if vars_.get(k, 0.0) else 0.0 for k, v in x.items()}
        return {k: _blend(a, learned[k], EXPERT_SCORECARD.get(k, 0.0) * v) for k, v in x.items()}

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {}


def _blend(a: float, learned: float, expert: float) -> float:
    """The learned model's share ``a`` of a quantity, the expert scorecard's the rest.

    Only what has a share is read: at ``a`` = 1 the expert's value is ignored, at 0 the learned one.

    >>> _blend(1.0, 0.3, 99.0), _blend(0.0, 99.0, 0.2), _blend(0.25, 0.4, 0.8)
    (0.3, 0.2, 0.7000000000000001)
    """
    if a >= 1.0:
        return learned
    return a * learned + (1.0 - a) * expert


def _clip(v: float, c: float) -> float:
    """A scaled feature clipped to [-c, c]."""
    return -c if v < -c else c if v > c else v


def _sigmoid(z: float) -> float:
    z = max(min(z, 30.0), -30.0)
    return 1.0 / (1.0 + math.exp(-z))


def dumps_model(model: RiskModel) -> bytes:
    """Checkpoint bytes (pickle); :func:`loads_model` gives a model with identical scores."""
    return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def loads_model(data: bytes) -> RiskModel:
    model = pickle.loads(data)
    if not isinstance(model, RiskModel):
        raise TypeError(f"checkpoint holds a {type(model).__name__}, not a RiskModel")
    return model
