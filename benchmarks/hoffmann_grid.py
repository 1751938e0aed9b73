"""The reference fit: Hoffmann et al. 2022's procedure, scipy L-BFGS-B from each of 4500 starts, the best kept.

As in the Epoch replication (Besiroglu et al. 2024), with the analytic gradient and tight tolerances. It is slow
(minutes); `lightning_scaling.law.fit.ChinchillaFit` reaches the same optimum, which `tests/test_grid_agreement.py`
and `benchmarks/fit_speed.py` check against this.
"""

from __future__ import annotations

import math

import numpy as np

from lightning_scaling.law import HUBER_DELTA
from lightning_scaling.law.objective import objective_grad_hess
from lightning_scaling.runs import validate_runs

HOFFMANN_GRID = {
    # Besiroglu et al. 2024 (Epoch's replication of Hoffmann et al. 2022): 5 x 5 x 5 x 6 x 6 = 4500 starts.
    "alpha": np.arange(0.0, 2.0 + 1e-9, 0.5),
    "beta": np.arange(0.0, 2.0 + 1e-9, 0.5),
    "e": np.arange(-1.0, 1.0 + 1e-9, 0.5),
    "a": np.arange(0.0, 25.0 + 1e-9, 5.0),
    "b": np.arange(0.0, 25.0 + 1e-9, 5.0),
}


def hoffmann_grid_starts() -> np.ndarray:
    """The 4500 starts (a, b, e, alpha, beta) of the reference grid, shape (4500, 5)."""
    g = HOFFMANN_GRID
    mesh = np.meshgrid(g["a"], g["b"], g["e"], g["alpha"], g["beta"], indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def random_box_starts(n: int, exponent_max: float = 3.0, seed: int = 1) -> np.ndarray:
    """`n` random starts (a, b, e, alpha, beta) over the grid's ranges, the exponents over [0, exponent_max]."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, 25, n), rng.uniform(0, 25, n), rng.uniform(-1, 1.5, n),
                     rng.uniform(0, exponent_max, n), rng.uniform(0, exponent_max, n)], axis=1)


def hoffmann_grid_fit(N, D, loss, delta: float = HUBER_DELTA, starts=None, ftol=1e-15, gtol=1e-12, maxiter=10_000,
                      exponent_max: float | None = None):
    """The reference method: scipy L-BFGS-B from every start of the 4500-point grid, keep the best.

    With `exponent_max`, the exponents are bounded to [0, exponent_max] (the box `ChinchillaFit` searches), so the
    best objective is the box optimum.

    Returns:
        (theta, objective): the best (a, b, e, alpha, beta) over all starts, in the data's units.
    """
    from scipy.optimize import minimize

    N, D, L = validate_runs(N, D, loss)
    logN, logD, logL = np.log(N), np.log(D), np.log(L)

    def fun(theta):
        f, g, _ = objective_grad_hess(theta[None, :], logN, logD, logL, delta=delta, hessian=False)
        return float(f[0]), g[0]

    best_theta, best_f = None, math.inf
    for x0 in hoffmann_grid_starts() if starts is None else starts:
        bounds = None if exponent_max is None else [(None, None)] * 3 + [(0.0, exponent_max)] * 2
        res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"ftol": ftol, "gtol": gtol, "maxiter": maxiter})
        if np.isfinite(res.fun) and res.fun < best_f:
            best_theta, best_f = res.x, float(res.fun)
    return best_theta, best_f
