"""The one fold scheme of the evaluation (forward chaining over compute), its conformal quantile, and the hull in which
a fold's checkpoints count.

Forward chaining over compute (rolling-origin evaluation, as for time series): the law is fitted on the runs below a
compute level and predicts runs above it, the way the recommendation will be used. A fold (`Fold`) is the indices of
the runs it fits on (`train`) and of those it predicts (`test`).

- By shares of the runs ordered by C = 6ND (`prefix_folds`): fit on the smallest `SHARES` of them (50%, 60%, ...,
  90%) and predict the next `FOLD_STEP` (10%; the last share, all the rest), or, with ``step=None``, every run above
  the prefix. The backtest predicts the next block, so that each run is predicted once, by the fit that extrapolates
  to it the least; the calibration of intervals (`evaluation.intervals`) predicts every run above, so that the
  distance extrapolated varies, and fits one smaller prefix first (`DRIFT_REFERENCE`, 40%), which predicts nothing:
  the earlier fit the 50% fit's predictions are compared with (the drift of the law).
- By isoFLOP budget (`forward_folds`, for the backtest): when the runs form isoFLOP groups (at least `MIN_GROUPS`
  budgets, a median of `MIN_GROUP_SIZE` runs each), one fold per budget: fit on every smaller budget, predict that
  budget's runs; for the largest `MAX_FOLDS` budgets whose smaller budgets hold at least half of the runs (all
  budgets with `MIN_TRAIN` runs below them, if that leaves fewer than two).

The held-out errors become an interval by the split-conformal quantile (`conformal_quantile`; Vovk et al. 2005, Lei
et al. 2018): the ceil((n + 1) p)-th smallest of n scores, infinite when n is too small for p.

A fold that fits on checkpoints as well as final losses keeps only those inside the convex hull of its training runs'
(log N, log D) (`inside_hull`): where final losses anchor the law (`curves.correction`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lightning_scaling.law.isoflop import are_budgets, group_by_flops
from lightning_scaling.schedules.flops import training_compute

SHARES = (0.5, 0.6, 0.7, 0.8, 0.9)  # fit on these shares of the runs by compute: at least half of them, as in use
FOLD_STEP = 0.1  # ... and predict the next share (one block each, so that each run is predicted once)
DRIFT_REFERENCE = 0.4  # the calibration's first prefix fit: the drift reference of the 50% fit, it predicts nothing
MIN_GROUPS = 3  # isoFLOP folds need at least three budgets (two to fit on, one to predict)
MIN_GROUP_SIZE = 3  # ... with a median of three runs each (the sizes of a parabola)
MIN_TRAIN = 5  # a fold trains on at least this many runs
MAX_FOLDS = 5  # isoFLOP folds: the largest budgets (the extrapolations that matter, and a bounded cost)
HULL_TOLERANCE = 1e-9  # a checkpoint on the edge of the final losses' hull (the same N as a final) is inside


@dataclass(frozen=True)
class Fold:
    """Indices of the runs a fold fits on (`train`) and predicts (`test`), and its compute cut."""

    train: np.ndarray
    test: np.ndarray
    train_max_flops: float
    test_flops: float  # the geometric mean compute of the test block (NaN when it is empty)
    kind: str  # "isoflop" or "prefix"

    def label(self) -> str:
        if self.kind == "isoflop":
            return f"the law fitted on budgets below {self.test_flops:.2g} predicted the {self.test_flops:.2g} runs"
        return (f"the law fitted on the runs up to {self.train_max_flops:.2g} FLOPs predicted the next "
                f"{len(self.test)} (around {self.test_flops:.2g})")


def _fold(C, train, test, kind: str) -> Fold:
    test_flops = float(np.exp(np.log(C[test]).mean())) if len(test) else math.nan
    return Fold(train, test, float(C[train].max()), test_flops, kind)


def prefix_folds(N, D, shares=SHARES, *, step: float | None = FOLD_STEP, min_train: int = MIN_TRAIN) -> list[Fold]:
    """Nested prefixes of the runs ordered by compute (module docstring), smallest first: fit on each share of them,
    predict the next `step` of them (the last share: all the rest) or, with ``step=None``, every run above.

    A share that rounds to fewer than `min_train` runs, to no more runs than the share before, or that leaves no run
    to predict gives no fold.
    """
    C = training_compute(np.asarray(N, float), np.asarray(D, float))
    order = np.argsort(C, kind="stable")
    n = len(C)
    folds: list[Fold] = []
    for share in shares:
        size = int(round(share * n))
        end = n if step is None or share == shares[-1] else int(round((share + step) * n))
        if size < min_train or end <= size or (folds and size <= len(folds[-1].train)):
            continue
        folds.append(_fold(C, order[:size], order[size:end], "prefix"))
    return folds


def budget_groups(C, budgets=None) -> list[np.ndarray]:
    """The runs' indices by the budget they were planned at, smallest first: the `budgets` column when given (the
    natural breaks of its values when numbers, e.g. a ``flops`` or ``budget`` column; equal labels when not, e.g. a
    ``group`` column, ordered by their runs' median compute), else the natural breaks of the runs' compute `C`
    (`law.isoflop.group_by_flops`)."""
    C = np.asarray(C, float)
    if budgets is None:
        return group_by_flops(C)
    b = np.asarray(budgets)
    if b.dtype.kind in "fiu":
        return group_by_flops(b.astype(float))
    labels = list(dict.fromkeys(b.tolist()))
    return sorted((np.flatnonzero(b == label) for label in labels), key=lambda g: float(np.median(C[g])))


def forward_folds(N, D, min_train: int = MIN_TRAIN, budgets=None) -> list[Fold]:
    """The backtest's folds of these runs (module docstring): by budget (`budget_groups`, `budgets` the runs'
    budget column when they have one) where the runs form isoFLOP groups, otherwise by shares of the runs, each
    predicting the next block; smallest compute first. No fold fits on a run of the budget it predicts."""
    C = training_compute(np.asarray(N, float), np.asarray(D, float))
    groups = budget_groups(C, budgets)
    if budgets is None and not are_budgets(C, groups):  # runs spread over compute: no budgets to fold by
        return prefix_folds(N, D, min_train=min_train)
    if len(groups) < MIN_GROUPS or float(np.median([len(g) for g in groups])) < MIN_GROUP_SIZE:
        return prefix_folds(N, D, min_train=min_train)
    folds = []
    for k in range(1, len(groups)):
        train = np.concatenate(groups[:k])
        if len(train) >= min_train:
            folds.append(_fold(C, train, groups[k], "isoflop"))
    half = [f for f in folds if 2 * len(f.train) >= len(C)]
    return (half if len(half) >= 2 else folds)[-MAX_FOLDS:]


def conformal_quantile(scores, confidence: float) -> float:
    """The ceil((n + 1) p)-th smallest of n scores (split conformal), p = `confidence`; inf when n is too small
    for p (no score, or fewer than p / (1 - p) of them).

    >>> conformal_quantile(np.arange(1, 1001), 0.8)
    801.0
    >>> conformal_quantile([0.1, 0.2, 0.3], 0.8)
    inf
    """
    scores = np.sort(np.asarray(scores, float))
    n = len(scores)
    k = math.ceil((n + 1) * confidence)
    return float(scores[k - 1]) if 1 <= k <= n else math.inf


def inside_hull(N, D, at_N, at_D) -> np.ndarray:
    """Whether each (at_N, at_D) lies in the convex hull of the points (N, D), in logs (on its edge counts);
    all False when the points span no area (one size, or one token count)."""
    from scipy.spatial import Delaunay, QhullError  # deferred: scipy.spatial loads only where checkpoints are used

    at = np.column_stack([np.log(np.asarray(at_N, float)), np.log(np.asarray(at_D, float))])
    base = np.unique(np.column_stack([np.log(np.asarray(N, float)), np.log(np.asarray(D, float))]), axis=0)
    if len(at) == 0 or len(base) < 3:
        return np.zeros(len(at), bool)
    try:
        triangulation = Delaunay(base)
    except QhullError:  # collinear
        return np.zeros(len(at), bool)
    return triangulation.find_simplex(at, tol=HULL_TOLERANCE) >= 0
