"""Global minimisation of the Huber objective (see `objective.py`): profile scan, then batched Newton.

Hoffmann et al. 2022 minimise the objective with L-BFGS from a grid of 4500 starts, because the loss surface has
many local minima. We find the same optimum much faster (`benchmarks/fit_speed.py`) with two observations:

1. Variable projection. For fixed exponents (alpha, beta) the law E + A x + B y, with x = N^-alpha and
   y = D^-beta, is linear in (E, A, B). A least-squares solve on relative errors (the first-order form of the
   log residual) gives the best (E, A, B) for every cell of a dense (alpha, beta) grid at once; the exact Huber
   objective at those values maps the profile of the objective over the exponents. Each local minimum of that
   profile is one basin of the full problem.
2. Newton, batched. From the best cell of each basin, a Newton method with the exact Hessian (its eigenvalues
   made positive, and a backtracking line search) converges quadratically once the set of residuals inside the
   Huber threshold settles. All starts (or all bootstrap replicates, whose resampling counts are just weights on
   the runs) are optimised together in one numpy pass per iteration.

3. The box. Exponents are kept in [0, exponent_max]. Newton's clipped steps can stall on a face of that box short
   of the box's own optimum, so the best few end points are polished by L-BFGS-B with the exponents bounded
   (`box_polish`): at a bound the search returns the box optimum, which the caller reports as a boundary fit.

Work happens in centred logs (log N - mean log N), which changes a and b but not the objective; the caller maps
back.
"""

from __future__ import annotations

import numpy as np

from lightning_scaling.law.objective import HUBER_DELTA, huber, objective, objective_grad_hess

# Sub-models of (E, A, B) tried when the full least-squares solve gives a non-positive coefficient: the
# positive optimum then lies on a face where that term vanishes (a boundary of the log parametrisation).
_SUBSETS = ((0, 1, 2), (0, 1), (0, 2), (1, 2), (0,), (1,), (2,))
_TINY = 1e-12  # stand-in for a vanished coefficient, relative to the smallest loss: log of it is finite


SCAN_RUNS = 256  # the scan sees at most this many runs, spread evenly over compute; Newton then uses all of them


def scan_subset(log_compute, size: int = SCAN_RUNS) -> np.ndarray:
    """Indices of at most `size` runs spread evenly over compute (all of them when there are fewer).

    The scan only has to find the basins of the objective, and a few hundred runs spread over the whole compute
    range have the same basins as thousands; the Newton refinement that follows works on every run, so the optimum
    is that of all of them. This keeps the scan's cost (a Huber sum per grid cell and run) bounded as the store
    grows.

    >>> scan_subset(np.arange(5.0), 3).tolist()
    [0, 2, 4]
    """
    n = len(log_compute)
    if n <= size:
        return np.arange(n)
    order = np.argsort(log_compute, kind="stable")
    return np.sort(order[np.unique(np.round(np.linspace(0, n - 1, size)).astype(int))])


def profile_scan(logN, logD, logL, alphas, betas, w=None, delta=HUBER_DELTA):
    """Best (E, A, B) and the Huber objective at every (alpha, beta) of a grid.

    Args:
        logN, logD, logL: centred log parameters, centred log tokens and log losses, shape (n,).
        alphas, betas: the exponent grid, shapes (nA,) and (nB,).
        w: optional weights on the runs, shape (n,).

    Returns:
        (values, coefs): objective values of shape (nA, nB), and (E, A, B) of shape (nA, nB, 3).
    """
    L = np.exp(logL)
    u = 1.0 / L
    w = np.ones_like(L) if w is None else np.asarray(w, float)
    q = w * u * u  # weights of the squared relative error
    v = w * u
    X = np.exp(-np.outer(alphas, logN))  # (nA, n)
    Y = np.exp(-np.outer(betas, logD))  # (nB, n)
    nA, nB = len(alphas), len(betas)
    # Gram matrix of the design columns (1, x, y) / L under weights w, and the right-hand side.
    G = np.empty((nA, nB, 3, 3))
    G[..., 0, 0] = q.sum()
    G[..., 0, 1] = G[..., 1, 0] = (X @ q)[:, None]
    G[..., 0, 2] = G[..., 2, 0] = (Y @ q)[None, :]
    G[..., 1, 1] = ((X * X) @ q)[:, None]
    G[..., 2, 2] = ((Y * Y) @ q)[None, :]
    G[..., 1, 2] = G[..., 2, 1] = (X * q) @ Y.T
    rhs = np.empty((nA, nB, 3))
    rhs[..., 0] = v.sum()
    rhs[..., 1] = (X @ v)[:, None]
    rhs[..., 2] = (Y @ v)[None, :]

    best = np.full((nA, nB), np.inf)
    coefs = np.zeros((nA, nB, 3))
    floor = _TINY * L.min()
    for subset in _SUBSETS:
        idx = np.array(subset)
        Gs = G[..., idx[:, None], idx[None, :]]
        rs = rhs[..., idx]
        # A small ridge keeps the solve finite where columns are nearly collinear (alpha or beta near 0).
        ridge = 1e-12 * np.trace(Gs, axis1=-2, axis2=-1)[..., None, None] * np.eye(len(idx))
        try:
            c = np.linalg.solve(Gs + ridge, rs[..., None])[..., 0]
        except np.linalg.LinAlgError:  # pragma: no cover - singular only for degenerate data
            continue
        feasible = np.all(c > 0, axis=-1) & ~np.isfinite(best)
        if not feasible.any():
            continue
        ia, ib = np.nonzero(feasible)
        full = np.full((len(ia), 3), floor)
        full[:, idx] = c[ia, ib]
        pred = full[:, 0:1] + full[:, 1:2] * X[ia] + full[:, 2:3] * Y[ib]
        best[ia, ib] = (huber(np.log(pred) - logL, delta) * w).sum(axis=1)
        coefs[ia, ib] = full
    return best, coefs


def basin_starts(values, coefs, alphas, betas, n_starts):
    """Up to `n_starts` starting points theta = (a, b, e, alpha, beta), one per local minimum of the profile."""
    padded = np.pad(values, 1, constant_values=np.inf)
    nA, nB = values.shape
    is_min = np.isfinite(values)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                is_min &= values <= padded[1 + di : 1 + di + nA, 1 + dj : 1 + dj + nB]
    ia, ib = np.nonzero(is_min)
    order = np.argsort(values[ia, ib], kind="stable")[:n_starts]
    ia, ib = ia[order], ib[order]
    if len(ia) == 0:  # every cell infeasible: cannot happen for positive losses, kept for safety
        ia, ib = np.unravel_index(np.argsort(values, axis=None)[:1], values.shape)
    E, A, B = coefs[ia, ib, 0], coefs[ia, ib, 1], coefs[ia, ib, 2]
    return np.stack([np.log(A), np.log(B), np.log(E), alphas[ia], betas[ib]], axis=1)


def newton(theta, logN, logD, logL, w=None, delta=HUBER_DELTA, exponent_max=3.0, max_iter=200):
    """Minimise K problems at once by Newton's method with a modified Hessian and backtracking.

    Args:
        theta: starts, shape (K, 5).
        w: weights, shape (n,) shared or (K, n) one row per problem (bootstrap counts).
        exponent_max: alpha and beta are kept in [0, exponent_max].

    Returns:
        (theta, f): the minimisers (K, 5) and objective values (K,).
    """
    theta = np.array(theta, dtype=float)
    K = len(theta)
    per_problem_w = w is not None and np.ndim(w) == 2
    f, g, H = objective_grad_hess(theta, logN, logD, logL, w, delta)
    active = np.ones(K, bool)
    stalls = np.zeros(K, int)
    lo = np.array([-np.inf, -np.inf, -np.inf, 0.0, 0.0])
    hi = np.array([np.inf, np.inf, np.inf, exponent_max, exponent_max])
    for _ in range(max_iter):
        idx = np.nonzero(active)[0]
        if len(idx) == 0:
            break
        wi = w[idx] if per_problem_w else w
        lam, V = np.linalg.eigh(H[idx])
        lam = np.abs(lam)
        lam = np.maximum(lam, 1e-10 * lam.max(axis=1, keepdims=True) + 1e-300)
        d = -np.einsum("kij,kj->ki", V, np.einsum("kji,kj->ki", V, g[idx]) / lam)
        # Converged: the decrease the quadratic model predicts (half the Newton decrement) is at rounding level, so
        # no line search could find a better point.
        done = 0.5 * -np.einsum("kj,kj->k", g[idx], d) <= 1e-14 * np.abs(f[idx]) + 1e-300
        if done.any():
            active[idx[done]] = False
            idx, d = idx[~done], d[~done]
            if len(idx) == 0:
                break
            wi = w[idx] if per_problem_w else w
        t = np.ones(len(idx))
        th0, f0, g0 = theta[idx], f[idx], g[idx]
        accepted = np.zeros(len(idx), bool)
        new_th, new_f = th0.copy(), f0.copy()
        pending = np.arange(len(idx))
        for _ls in range(50):
            cand = np.clip(th0[pending] + t[pending, None] * d[pending], lo, hi)
            fc = objective(cand, logN, logD, logL, wi[pending] if per_problem_w else wi, delta)
            slope = np.einsum("kj,kj->k", g0[pending], cand - th0[pending])
            ok = (fc <= f0[pending] + 1e-4 * np.minimum(slope, 0.0)) & (fc <= f0[pending])
            done = pending[ok]
            new_th[done], new_f[done] = cand[ok], fc[ok]
            accepted[done] = True
            pending = pending[~ok]
            if len(pending) == 0:
                break
            t[pending] *= 0.5
        improvement = f0 - new_f
        tiny = improvement <= 1e-15 * np.abs(f0) + 1e-300
        stalls[idx] = np.where(tiny, stalls[idx] + 1, 0)
        theta[idx] = new_th
        if accepted.any():
            ia = idx[accepted]
            f[ia], g[ia], H[ia] = objective_grad_hess(
                theta[ia], logN, logD, logL, w[ia] if per_problem_w else w, delta
            )
        # Converged: no accepted step (the line search found no decrease at machine precision), or two
        # iterations in a row that improved by less than 1e-15 relative.
        active[idx[~accepted]] = False
        active[idx[stalls[idx] >= 2]] = False
    return theta, f


def box_polish(theta, f, logN, logD, logL, delta=HUBER_DELTA, exponent_max=3.0, n_polish=3):
    """Polish the best `n_polish` of the minimisers `theta` (K, 5) with L-BFGS-B, exponents bounded to
    [0, exponent_max], keeping each result only where it lowers the objective. Returns the updated (theta, f)."""
    from scipy.optimize import minimize

    theta, f = np.array(theta, float), np.array(f, float)

    def fun(x):
        value, grad, _ = objective_grad_hess(x[None, :], logN, logD, logL, delta=delta, hessian=False)
        return float(value[0]), grad[0]

    bounds = [(None, None)] * 3 + [(0.0, exponent_max)] * 2
    for k in np.argsort(f)[:n_polish]:
        res = minimize(fun, theta[k], jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})
        if np.isfinite(res.fun) and res.fun < f[k]:
            theta[k], f[k] = res.x, float(res.fun)
    return theta, f
