"""How well the score separates outcomes as labels arrive: rolling AUC, drift, KS."""
from __future__ import annotations

import numpy as np
from river import drift, metrics

__all__ = ["ScoreQuality", "roc_auc", "ks_statistic", "paired_auc_z"]


class ScoreQuality:
    """Rolling ROC AUC over recent labels and ADWIN on the model's absolute error."""

    def __init__(self, window: int = 2000, adwin_delta: float = 0.002) -> None:
        self.rolling_auc = metrics.RollingROCAUC(window_size=window)
        self.adwin = drift.ADWIN(delta=adwin_delta)
        self.labels = 0
        self.positives = 0
        self.drifts = 0

    def update(self, y: bool, p: float) -> bool:
        """Record one outcome against the score it was given; True if drift was detected."""
        self.labels += 1
        self.positives += int(y)
        self.rolling_auc.update(y, {False: 1.0 - p, True: p})
        self.adwin.update(abs(float(y) - p))
        if self.adwin.drift_detected:
            self.drifts += 1
            return True
        return False

    def auc(self) -> float | None:
        if self.positives == 0 or self.positives == self.labels:
            return None
        return float(self.rolling_auc.get())


def roc_auc(labels: list[bool] | list[int], scores: list[float]) -> float | None:
    """Exact ROC AUC (ties count half), or None when one class is absent.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    pairs = sorted(zip(scores, labels))
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = 0.0
    i = 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + j + 1) / 2  # ranks are 1-based
        rank_sum += avg_rank * sum(1 for k in range(i, j) if pairs[k][1])
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def paired_auc_z(labels: list[bool], a: list[float], b: list[float]) -> tuple[float, float, float] | None:
    """(AUC of ``a``, AUC of ``b``, z of their difference) on the same outcomes, by DeLong's test for
    correlated ROC curves (DeLong, DeLong and Clarke-Pearson, Biometrics 1988); None with one class only.

    z > 1.645: ``a`` ranks these outcomes better than ``b`` at the one-sided 5% level.

    >>> ys = [0, 0, 0, 1, 1, 1] * 4
    >>> auc_a, auc_b, z = paired_auc_z(ys, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9] * 4, [0.5, 0.1, 0.9, 0.2, 0.8, 0.6] * 4)
    >>> auc_a, round(auc_b, 3), round(z, 2)
    (1.0, 0.556, 3.32)
    >>> paired_auc_z(ys, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9] * 4, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9] * 4)[2]
    0.0
    """
    y = np.asarray(labels, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return None
    v10, v01 = [], []
    for s in (np.asarray(a, dtype=float), np.asarray(b, dtype=float)):
        pos, neg = s[y][:, None], s[~y][None, :]
        psi = (pos > neg) + 0.5 * (pos == neg)  # n1 x n0: each (default, good) pair ranked right, tied or wrong
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    auc_a, auc_b = float(v10[0].mean()), float(v10[1].mean())
    var = 0.0
    for v, n in ((v10, n1), (v01, n0)):
        if n > 1:  # one default (or one good) alone has no spread to estimate
            c = np.cov(np.vstack(v))
            var += (c[0, 0] + c[1, 1] - 2 * c[0, 1]) / n
    if not var > 0.0:
        return auc_a, auc_b, 0.0 if auc_a == auc_b else float("inf") if auc_a > auc_b else float("-inf")
    return auc_a, auc_b, float((auc_a - auc_b) / var ** 0.5)


def ks_statistic(labels: list[bool] | list[int], scores: list[float]) -> float | None:
    """Kolmogorov-Smirnov distance between the score distributions of bads and goods.

    >>> ks_statistic([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    1.0
    """
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    best = cum_pos = cum_neg = 0.0
    pairs = sorted(zip(scores, labels))
    for i, (s, y) in enumerate(pairs):
        if y:
            cum_pos += 1
        else:
            cum_neg += 1
        if i + 1 == len(pairs) or pairs[i + 1][0] != s:
            best = max(best, abs(cum_pos / n_pos - cum_neg / n_neg))
    return best
