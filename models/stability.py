"""Population stability: whom the model scores now, against whom it learned from.

The reference is the statements whose outcomes the model has learned (their
score and features as they stood at the statement, point in time); the current
population is the statements it has scored lately, most of whose outcomes are
not known yet. Each is a histogram per feature and for the score, over fixed
bins, with counts that decay by ``1/window`` per observation (a window of about
``window`` statements, O(1) per statement and 19 KB per shard pickled). The
population stability index of a column is ``sum((q - p) * ln(q / p))`` over its
bins, ``p`` the reference shares and ``q`` the current ones (each share at
least :data:`FLOOR`, so an empty bin counts as rare, not impossible). Rules of
thumb in the trade: under 0.10 stable, 0.10-0.25 a shift worth a look, above
0.25 a population the model was not fitted on.

Fixed bins rather than the reference's quantiles, so that shards and restarts
agree on them and a histogram is a few counts: zero has a bin of its own (most
features of most accounts are 0), and the others follow the scales the
features are built on (shares in [0, 1], capped ratios, logs of amounts,
day counts).

>>> s = Stability(window=200)
>>> for i in range(400):
...     s.learned(0.02 * (i % 5), [float(i % 3)])
...     s.scored(0.02 * (i % 5), [float(i % 3)])
>>> s.psi(("f",))["f"] < 0.001
True
>>> for i in range(400):
...     s.scored(0.5, [4.0])
>>> s.psi(("f",))["f"] > 0.25 and s.psi(("f",))["score"] > 0.25
True
"""
from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence

__all__ = ["FLOOR", "MIN_COUNT", "SCORE_EDGES", "FEATURE_EDGES", "Stability"]

# Bin edges (a value v falls in bin bisect_right(edges, v)): zero alone, then the scales features live on.
FEATURE_EDGES = (-8.0, -4.0, -2.0, -1.0, -1e-9, 1e-9, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0, 30.0,
                 90.0)
# Probabilities of default: most scores are small, so the low end is cut finely.
SCORE_EDGES = (0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.35, 0.6, 0.85)
_ZERO_BIN = bisect_right(FEATURE_EDGES, 0.0)
FLOOR = 1e-4  # the least share a bin counts for
MIN_COUNT = 100.0  # statements (decayed) each population needs before its PSI is given


class Stability:
    """Decayed histograms of the reference (learned) and current (scored) statements; see the module."""

    def __init__(self, window: int = 1000) -> None:
        if window < 2:
            raise ValueError("a stability window holds at least 2 statements")
        self.window = window
        # Per population: [score histogram, one histogram per feature (created on first sight), total].
        self._ref: list[list[float]] = []
        self._cur: list[list[float]] = []
        self._ref_total = 0.0
        self._cur_total = 0.0
        # Lazy decay: each new observation weighs 1/decay^n; all counts are rescaled now and then.
        self._ref_w = 1.0
        self._cur_w = 1.0

    def learned(self, score: float | None, x: Sequence[float]) -> None:
        """A statement whose outcome the model has just learned (as it stood at the statement)."""
        self._ref_w, self._ref_total = self._add(self._ref, self._ref_w, self._ref_total, score, x)

    def scored(self, score: float | None, x: Sequence[float]) -> None:
        """A statement the model has just scored."""
        self._cur_w, self._cur_total = self._add(self._cur, self._cur_w, self._cur_total, score, x)

    def _add(self, hists: list[list[float]], w: float, total: float, score: float | None,
             x: Sequence[float]) -> tuple[float, float]:
        if not hists:
            hists.append([0.0] * (len(SCORE_EDGES) + 1))
        while len(hists) < len(x) + 1:
            hists.append([0.0] * (len(FEATURE_EDGES) + 1))
        if score is not None:
            hists[0][bisect_right(SCORE_EDGES, score)] += w
        for i, v in enumerate(x, 1):
            hists[i][bisect_right(FEATURE_EDGES, v) if v else _ZERO_BIN] += w  # most features are 0
        total += w
        w /= 1.0 - 1.0 / self.window
        if w > 1e12:  # rescale before the weights run away
            for h in hists:
                for j in range(len(h)):
                    h[j] /= w
            total /= w
            w = 1.0
        return w, total

    def counts(self) -> tuple[float, float]:
        """The reference's and the current population's statements, decayed (as the window sees them)."""
        return self._ref_total / self._ref_w, self._cur_total / self._cur_w

    def psi(self, names: Sequence[str], min_count: float = MIN_COUNT) -> dict[str, float]:
        """PSI of ``"score"`` and of each feature named (in the vectors' order); empty until both populations
        hold ``min_count`` statements."""
        return Stability.merged([self], names, min_count)

    @staticmethod
    def merged(parts: Iterable[Stability], names: Sequence[str], min_count: float = MIN_COUNT) -> dict[str, float]:
        """The PSI of the populations of several shards taken together (each shard's histograms summed)."""
        ref: list[list[float]] = []
        cur: list[list[float]] = []
        n_ref = n_cur = 0.0
        for part in parts:
            for mine, into, w in ((part._ref, ref, part._ref_w), (part._cur, cur, part._cur_w)):
                for i, h in enumerate(mine):
                    if i == len(into):
                        into.append([0.0] * len(h))
                    for j, c in enumerate(h):
                        into[i][j] += c / w
            a, b = part.counts()
            n_ref += a
            n_cur += b
        if n_ref < min_count or n_cur < min_count or not ref or not cur:
            return {}
        out = {}
        for i, name in enumerate(("score", *names)):
            if i < len(ref) and i < len(cur) and sum(ref[i]) > 0 and sum(cur[i]) > 0:
                out[name] = _psi(ref[i], cur[i])
        return out


def _psi(ref: list[float], cur: list[float]) -> float:
    r, c = sum(ref), sum(cur)
    total = 0.0
    for a, b in zip(ref, cur):
        p = max(a / r, FLOOR)
        q = max(b / c, FLOOR)
        total += (q - p) * math.log(q / p)
    return total
