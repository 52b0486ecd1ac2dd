"""How well the score separates outcomes as labels arrive: rolling AUC, drift, KS."""
from __future__ import annotations

from river import drift, metrics

__all__ = ["ScoreQuality", "roc_auc", "ks_statistic"]


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
