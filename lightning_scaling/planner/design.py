"""Which runs most shrink the uncertainty of N_opt at a target compute: a c-optimal design for the Chinchilla law.

The fit (`law.fit`) minimises a robust loss of the log residuals r_i = log L_hat(N_i, D_i; theta) - log L_i over
theta = (a, b, e, alpha, beta), log L_hat = logsumexp(a - alpha log N, b - beta log D, e). Near the optimum its
covariance is the Gauss-Newton one, sigma^2 (J^T J)^-1, with J the Jacobian of log L_hat over the runs:

    d log L_hat / d (a, b, e, alpha, beta) = (p_A, p_B, p_E, -p_A log N, -p_B log D),

p_A = A N^-alpha / L_hat, p_B = B D^-beta / L_hat, p_E = E / L_hat (each term's share of the loss). The quantity a
user decides on is log N_opt at the target compute C*, a function g(theta); its variance is
sigma^2 grad g^T (J^T J)^-1 grad g (the delta method). A design that minimises it is c-optimal (Elfving 1952;
Atkinson, Donev and Tobias 2007, Ch. 10); sequentially, at the current estimate (Chernoff 1953): the runs to add
are those whose rows of J most reduce that variance, and the ratio of the standard deviations after and before is
the interval's expected shrink. A weak ridge (`RIDGE`, relative to the information's scale) keeps the matrix
invertible before the runs pin every direction (a first stage, or one isoFLOP group).

The approximation is local: it assumes the law's form and the estimate; a bootstrap of the refit measures the
interval itself, and each stage replans from the new fit.
"""

from __future__ import annotations

import math

import numpy as np

from lightning_scaling.schedules.flops import FLOPS_PER_PARAM_TOKEN

RIDGE = 1e-10  # relative to the trace of J^T J over the runs so far: well below its smallest eigenvalues


def _shares(theta, N, D):
    a, b, e, alpha, beta = theta
    logN, logD = np.log(N), np.log(D)
    terms = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)], axis=-1)
    terms = terms - terms.max(axis=-1, keepdims=True)
    w = np.exp(terms)
    return w / w.sum(axis=-1, keepdims=True), logN, logD


def jacobian(theta, N, D) -> np.ndarray:
    """(n, 5): d log L_hat / d theta at each run (module docstring)."""
    p, logN, logD = _shares(theta, np.asarray(N, float), np.asarray(D, float))
    return np.stack([p[:, 0], p[:, 1], p[:, 2], -p[:, 0] * logN, -p[:, 1] * logD], axis=1)


def log_params_opt(theta, flops: float) -> float:
    """log N_opt at `flops` (C = 6ND): log G + beta / (alpha + beta) log(C / 6), G = (alpha A / (beta B))^(1 /
    (alpha + beta)) (Hoffmann et al. 2022, Eq. 4)."""
    a, b, _, alpha, beta = theta
    if alpha <= 0 or beta <= 0:
        return math.nan
    s = alpha + beta
    return (math.log(alpha) + a - math.log(beta) - b) / s + beta / s * math.log(flops / FLOPS_PER_PARAM_TOKEN)


def gradient_log_params_opt(theta, flops: float) -> np.ndarray:
    """d log N_opt(flops) / d theta, by central differences (the closed form is short but easy to get wrong)."""
    theta = np.asarray(theta, float)
    out = np.zeros(5)
    for i in range(5):
        h = 1e-6 * max(1.0, abs(theta[i]))
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        out[i] = (log_params_opt(up, flops) - log_params_opt(down, flops)) / (2 * h)
    return out


def information(theta, N, D, weights=None) -> np.ndarray:
    J = jacobian(theta, N, D)
    w = np.ones(len(J)) if weights is None else np.asarray(weights, float)
    return (J * w[:, None]).T @ J


def variance_log_params_opt(theta, info: np.ndarray, flops: float, sigma: float, ridge_scale: float) -> float:
    """sigma^2 grad^T (I + ridge)^-1 grad (module docstring)."""
    g = gradient_log_params_opt(theta, flops)
    M = info + RIDGE * ridge_scale * np.eye(5)
    try:
        x = np.linalg.solve(M, g)
    except np.linalg.LinAlgError:
        return math.inf
    return float(sigma * sigma * g @ x)


def expected_shrink(theta, N, D, new_N, new_D, flops: float, sigma: float) -> tuple[float, float, float]:
    """(sd before, sd after, after / before) of log N_opt at `flops` when runs at (new_N, new_D) are added to
    the runs at (N, D), at the estimate `theta` and the runs' scatter `sigma` in log loss."""
    before = information(theta, N, D)
    scale = float(np.trace(before)) or 1.0
    after = before + information(theta, new_N, new_D)
    v0 = variance_log_params_opt(theta, before, flops, sigma, scale)
    v1 = variance_log_params_opt(theta, after, flops, sigma, scale)
    sd0, sd1 = math.sqrt(max(v0, 0.0)), math.sqrt(max(v1, 0.0))
    return sd0, sd1, (sd1 / sd0 if sd0 > 0 else 1.0)


def group(flops: float, center: float, spread: float, count: int, name: str, stage: int) -> list[dict]:
    """An isoFLOP group (Hoffmann et al. 2022, Approach 2): `count` runs at compute `flops`, sizes geometric from
    center/spread to center*spread, each with the tokens that spend the compute (C = 6ND)."""
    sizes = center * np.geomspace(1.0 / spread, spread, count) if count > 1 else np.array([center])
    return [{"params": float(n), "tokens": float(flops / (FLOPS_PER_PARAM_TOKEN * n)), "flops": float(flops),
             "group": name, "stage": stage} for n in sizes]
