"""The learning-rate annealing law fitted across runs: a shared shape, each run's own coefficients.

The law is that of `curves.annealing` (Tissue et al. 2024),

    L(s) = L0 + A S1(s)^-alpha - C S2(s),

fitted over several runs at once (`fit_shared`): the shape parameters (alpha, and the momentum lam of the annealing
area) are shared by every run of a setup, the coefficients (L0, A, C) belong to each run (they depend on the model
size). For fixed (alpha, lam) every run's coefficients solve a non-negative least-squares problem in the relative
error, so the shared fit scans a grid of (alpha, lam) with each run's coefficients solved exactly (variable
projection) and polishes alpha at the best lam. lam is fitted (`MOMENTUM_GRID`) rather than fixed at Tissue et al.'s
0.999: the gain of a decay may hardly depend on its length (cooldowns of one run from checkpoints), which only a
smaller lam reproduces (benchmarks/README.md, "Forecast from the first 30% of a run").

A run is one or more curves (`Curve`): the main curve and, where a team trains them, branches that share the run's
weights up to their start (a cooldown from a checkpoint); all curves of one run share its coefficients. One curve
alone, observed at every point, is fitted the same way (`fit_curve`), with lam fixed unless asked.

C is measured only where the learning rate has fallen (`measures_C`): a run whose observed annealing area S2 is less
than `C_MEASURED` of that at the end of its plan has a C the forecast does not trust (`curves.forecast`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from lightning_scaling.curves.annealing import (
    ALPHA_GRID,
    MOMENTUM,
    MOMENTUM_RANGE,
    AnnealingLaw,
    check_points,
    schedule_areas,
)
from lightning_scaling.errors import ScalingDataError

MOMENTUM_GRID = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999)
C_MEASURED = 0.5  # C counts as measured when the observed S2 reaches half the S2 at the end of the plan
MIN_POINTS = 5  # one curve alone: four parameters (L0, A, C, alpha), fewer observed points cannot determine them


@dataclass(frozen=True)
class Curve:
    """One curve of a run: the learning rate at each logged step, and the loss where it was measured.

    `loss` is NaN at the steps not observed (the planned rest of the run). `run` names the run the curve belongs
    to: curves of one run share its coefficients (a cooldown branch and its main curve). `tokens` (at each step)
    and `params` (the run's N: non-embedding or average non-zero parameters, as the store counts them) let the law
    across runs (`curves.stacking`) forecast the run's final loss too."""

    run: str
    steps: np.ndarray
    lr: np.ndarray
    loss: np.ndarray
    tokens: np.ndarray | None = None
    params: float | None = None

    def __post_init__(self):
        if self.params is not None and not (isinstance(self.params, (int, float, np.floating))
                                            and math.isfinite(self.params) and self.params > 0):
            raise ScalingDataError(f"run {self.run!r}: `params` must be a positive number, got {self.params!r}")
        steps, lr, loss = check_points(self.steps, self.lr, self.loss, where=f"run {self.run!r}", planned_ok=True)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "lr", lr)
        object.__setattr__(self, "loss", loss)
        object.__setattr__(self, "_areas", {})

    @property
    def observed(self) -> np.ndarray:
        return np.isfinite(self.loss)

    @property
    def final_step(self) -> float:
        return float(self.steps[-1])

    @property
    def final_tokens(self) -> float:
        """Tokens at the curve's last step (NaN when not given)."""
        return float(self.tokens[-1]) if self.tokens is not None else math.nan

    def areas(self, momentum: float) -> tuple[np.ndarray, np.ndarray]:
        """(S1, S2) at every step of the curve, computed once per momentum."""
        if momentum not in self._areas:
            self._areas[momentum] = schedule_areas(self.steps, self.lr, momentum)
        return self._areas[momentum]

    def until(self, step: float) -> Curve:
        """The same curve with the losses after `step` hidden (the schedule kept)."""
        loss = np.where(self.steps <= step, self.loss, np.nan)
        out = replace(self, loss=loss)
        object.__setattr__(out, "_areas", self._areas)  # same schedule, same areas
        return out



@dataclass
class SharedCurveFit:
    """The annealing law over several runs: shared (alpha, momentum), each run's (L0, A, C)."""

    alpha: float
    momentum: float
    coefficients: dict = field(default_factory=dict)  # run -> (L0, A, C)
    c_measured: dict = field(default_factory=dict)  # run -> whether its observed S2 measured C
    objective: float = math.nan
    n_points: int = 0

    def law(self, run: str) -> AnnealingLaw:
        L0, A, C = self.coefficients[run]
        return AnnealingLaw(float(L0), float(A), float(C), float(self.alpha), float(self.momentum))

    def predict(self, curve: Curve) -> np.ndarray:
        S1, S2 = curve.areas(self.momentum)
        return self.law(curve.run).loss(S1, S2)

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "momentum": self.momentum, "objective": self.objective,
                "n_points": self.n_points,
                "runs": {run: {"L0": float(c[0]), "A": float(c[1]), "C": float(c[2]),
                               "C_measured": bool(self.c_measured.get(run, False))}
                         for run, c in self.coefficients.items()}}



def by_run(curves) -> dict[str, list[Curve]]:
    """The curves grouped by their run, in the order the runs first appear."""
    out: dict[str, list[Curve]] = {}
    for c in curves:
        out.setdefault(c.run, []).append(c)
    return out


def observations(curves: list[Curve], momentum: float):
    """Observed (S1, S2, loss) of one run's curves, and S2 at the end of its longest planned curve."""
    S1s, S2s, Ls = [], [], []
    planned_S2 = 0.0
    for c in curves:
        S1, S2 = c.areas(momentum)
        seen = c.observed & (S1 > 0)
        S1s.append(S1[seen])
        S2s.append(S2[seen])
        Ls.append(c.loss[seen])
        planned_S2 = max(planned_S2, float(S2[-1]))
    return np.concatenate(S1s), np.concatenate(S2s), np.concatenate(Ls), planned_S2


def nnls_coefficients(S1, S2, L, alpha, C=None):
    """(L0, A, C) >= 0 minimising the squared relative error at fixed alpha (C given: only L0, A); the sum of
    squares."""
    from scipy.optimize import nnls

    u = 1.0 / L
    with np.errstate(all="ignore"):
        P = S1 ** -alpha
    if C is None:
        X = np.stack([u, P * u, -S2 * u], axis=1)
        coef, rnorm = nnls(X, np.ones_like(L))
        return coef, rnorm * rnorm
    X = np.stack([u, P * u], axis=1)
    target = 1.0 + C * S2 * u
    coef, rnorm = nnls(X, target)
    return np.array([coef[0], coef[1], C]), rnorm * rnorm


def _profile(groups, alpha):
    """Sum over runs of each run's best sum of squares at this alpha, and the runs' coefficients (groups: run ->
    (S1, S2, L, C measured))."""
    total, coefs = 0.0, {}
    for run, (S1, S2, L, _) in groups.items():
        coef, ss = nnls_coefficients(S1, S2, L, alpha)
        total += ss
        coefs[run] = coef
    return total, coefs


def _grid_profile(S1, S2, L, alphas) -> np.ndarray:
    """One run's best sum of squares (coefficients >= 0) at every alpha of a grid at once.

    The unconstrained solution comes from the 3x3 normal equations, batched over the grid; the cells where it
    has a negative coefficient (or is singular) are solved by NNLS instead. The grid only chooses the cell that
    `fit_shared` polishes with the exact solve, so the normal equations' rounding does not reach the result."""
    u = 1.0 / L
    alphas = np.asarray(alphas, float)
    with np.errstate(all="ignore"):
        P = np.exp(-np.outer(alphas, np.log(S1))) * u  # (k, n): S1^-alpha / L
    b = -S2 * u
    use_c = bool(np.any(S2 > 0))
    ones = np.ones_like(u)
    cols = [np.broadcast_to(u, P.shape), P] + ([np.broadcast_to(b, P.shape)] if use_c else [])
    X = np.stack(cols, axis=-1)  # (k, n, p)
    G = np.einsum("kni,knj->kij", X, X)
    r = np.einsum("kni,n->ki", X, ones)
    out = np.empty(len(alphas))
    with np.errstate(all="ignore"):
        try:
            coef = np.linalg.solve(G, r[..., None])[..., 0]
        except np.linalg.LinAlgError:
            coef = np.full(r.shape, np.nan)
        ss = len(u) - 2.0 * np.einsum("ki,ki->k", coef, r) + np.einsum("ki,kij,kj->k", coef, G, coef)
    ok = np.all(np.isfinite(coef), axis=1) & np.all(coef >= 0.0, axis=1) & np.isfinite(ss)
    out[ok] = np.maximum(ss[ok], 0.0)
    for i in np.nonzero(~ok)[0]:
        out[i] = nnls_coefficients(S1, S2, L, float(alphas[i]))[1]
    return out


def fit_shared(curves, momentum: float | None = None, alphas=ALPHA_GRID) -> SharedCurveFit:
    """Fit the annealing law over runs' curves: shared alpha and momentum (fitted on `MOMENTUM_GRID` unless given),
    each run's (L0, A, C) (module docstring); `alphas` is the grid of alpha scanned before the polish."""
    from scipy.optimize import minimize_scalar

    runs = by_run(curves)
    if not runs:
        raise ScalingDataError("no curves to fit")
    momenta = MOMENTUM_GRID if momentum is None else (float(momentum),)
    for m in momenta:
        MOMENTUM_RANGE.check("momentum", m)
    best = None
    for m in momenta:
        groups = {}
        for run, cs in runs.items():
            S1, S2, L, planned = observations(cs, m)
            if len(L) == 0:
                continue
            groups[run] = (S1, S2, L, measures_C(S2, planned))
        if not groups:
            raise ScalingDataError("no observed loss in any curve")
        totals = sum(_grid_profile(S1, S2, L, alphas) for S1, S2, L, _ in groups.values())
        i = int(np.argmin(totals))
        if best is None or totals[i] < best[0]:
            best = (float(totals[i]), m, float(alphas[i]), groups)
    _, m, alpha, groups = best
    value, coefs = _profile(groups, alpha)
    i = int(np.argmin(np.abs(np.asarray(alphas) - alpha)))
    lo, hi = float(alphas[max(i - 1, 0)]), float(alphas[min(i + 1, len(alphas) - 1)])
    if hi > lo:
        res = minimize_scalar(lambda a: _profile(groups, a)[0], bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-6})
        if res.fun < value:
            value, alpha = float(res.fun), float(res.x)
            coefs = _profile(groups, alpha)[1]
    n = int(sum(len(g[2]) for g in groups.values()))
    return SharedCurveFit(alpha=alpha, momentum=m, coefficients=coefs,
                          c_measured={run: g[3] for run, g in groups.items()}, objective=value, n_points=n)



def measures_C(S2_observed, S2_planned) -> bool:
    """Whether a run's observed S2 measures C: it reaches `C_MEASURED` of the S2 planned (always, without a decay)."""
    if S2_planned <= 0:
        return True  # no decay planned: C plays no part
    return len(S2_observed) > 0 and float(np.max(S2_observed)) >= C_MEASURED * S2_planned



def fit_curve(steps, lr, loss, momentum: float | None = MOMENTUM) -> AnnealingLaw:
    """The annealing law of one curve observed at every point (`fit_shared` over that curve alone), lam fixed at
    `momentum` (Tissue et al.'s 0.999 unless given; None fits it on `MOMENTUM_GRID`).

    Raises:
        ScalingDataError: naming the point where `steps`, `lr` or `loss` is not a curve (`annealing.check_points`),
            or with fewer than `MIN_POINTS` points.
    """
    steps, lr, loss = check_points(steps, lr, loss)
    if len(steps) < MIN_POINTS:
        raise ScalingDataError(f"a curve law needs at least {MIN_POINTS} observed points, got {len(steps)}")
    return fit_shared([Curve("curve", steps, lr, loss)], momentum=momentum).law("curve")
