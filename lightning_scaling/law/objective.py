"""The fitting objective of Hoffmann et al. 2022 (Approach 3) with its exact gradient and Hessian.

For runs i with parameters N_i, tokens D_i and final loss L_i, and theta = (a, b, e, alpha, beta):

    r_i(theta) = LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i
    f(theta)   = sum_i w_i Huber_delta(r_i),   delta = 1e-3 (Hoffmann et al. 2022, Sec. D.2)

Huber_delta(r) = r^2 / 2 for |r| <= delta, delta (|r| - delta / 2) otherwise. The weights w_i are 1 for a plain
fit and the resampling counts for a bootstrap replicate. Every function here is batched: `theta` has shape
(K, 5) and `w` shape (K, n) or (n,), so K starts or K bootstrap replicates are optimised in one pass of numpy.

Derivatives. With z = (a - alpha log N, b - beta log D, e) and p = softmax(z), the gradient of r_i is
g_i = (p1, p2, p3, -p1 log N_i, -p2 log D_i); its Hessian is the covariance of the vectors dz_k/dtheta under p,
M_i - g_i g_i^T with M_i = sum_k p_k v_k v_k^T. Then

    grad f = sum_i w_i psi(r_i) g_i
    hess f = sum_i w_i [psi'(r_i) g_i g_i^T + psi(r_i) (M_i - g_i g_i^T)]

with psi = Huber' = clip(r, -delta, delta) and psi' = [|r| <= delta].
"""

from __future__ import annotations

import numpy as np

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, Sec. D.2; the Epoch replication (Besiroglu et al. 2024) uses the same


def huber(r, delta: float = HUBER_DELTA):
    """Huber loss, elementwise (scipy.special.huber's definition)."""
    r = np.abs(r)
    return np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta))


def _softmax_terms(theta, logN, logD):
    """LSE of the three terms and their softmax weights, each (K, n)."""
    a, b, e, alpha, beta = (theta[:, j : j + 1] for j in range(5))
    x1 = a - alpha * logN  # z1, then exp(z1 - m), in place (these arrays are K x n: allocations dominate)
    x2 = b - beta * logD
    m = np.maximum(x1, x2)
    np.maximum(m, e, out=m)
    x1 -= m
    np.exp(x1, out=x1)
    x2 -= m
    np.exp(x2, out=x2)
    x3 = np.exp(e - m)
    s = x1 + x2
    s += x3
    lse = np.log(s)
    lse += m
    np.reciprocal(s, out=s)
    x1 *= s
    x2 *= s
    x3 *= s
    return lse, x1, x2, x3


def residuals(theta, logN, logD, logL):
    """r_i = log L_hat_i - log L_i for each of K parameter vectors: shape (K, n)."""
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    lse, *_ = _softmax_terms(theta, logN, logD)
    return lse - logL


def objective(theta, logN, logD, logL, w=None, delta: float = HUBER_DELTA):
    """f(theta) for each row of theta: shape (K,)."""
    r = residuals(theta, logN, logD, logL)
    h = huber(r, delta)
    return h.sum(axis=1) if w is None else (h * w).sum(axis=1)


def objective_grad_hess(theta, logN, logD, logL, w=None, delta: float = HUBER_DELTA, hessian: bool = True):
    """f, grad f and (optionally) hess f for each row of theta: shapes (K,), (K, 5), (K, 5, 5)."""
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    lse, p1, p2, p3 = _softmax_terms(theta, logN, logD)
    r = lse - logL
    inside = np.abs(r) <= delta
    h = huber(r, delta)
    psi = np.clip(r, -delta, delta)
    if w is not None:
        w = np.broadcast_to(w, r.shape)
        h = h * w
        wpsi = w * psi
    else:
        wpsi = psi
    f = h.sum(axis=1)
    # g_i = (p1, p2, p3, -p1 logN, -p2 logD)
    G = np.stack([p1, p2, p3, -p1 * logN, -p2 * logD], axis=-1)  # (K, n, 5)
    grad = np.einsum("kn,knj->kj", wpsi, G)
    if not hessian:
        return f, grad, None
    c = inside.astype(float) if w is None else w * inside
    c = c - wpsi  # psi' - psi, weighted
    H = np.matmul(G.transpose(0, 2, 1) * c[:, None, :], G)
    # + sum_i w psi M_i, M_i = sum_k p_k v_k v_k^T (only the block structure below is non-zero)
    s1 = (wpsi * p1).sum(1)
    s2 = (wpsi * p2).sum(1)
    s3 = (wpsi * p3).sum(1)
    s1n = (wpsi * p1 * logN).sum(1)
    s2d = (wpsi * p2 * logD).sum(1)
    s1nn = (wpsi * p1 * logN * logN).sum(1)
    s2dd = (wpsi * p2 * logD * logD).sum(1)
    H[:, 0, 0] += s1
    H[:, 1, 1] += s2
    H[:, 2, 2] += s3
    H[:, 0, 3] -= s1n
    H[:, 3, 0] -= s1n
    H[:, 1, 4] -= s2d
    H[:, 4, 1] -= s2d
    H[:, 3, 3] += s1nn
    H[:, 4, 4] += s2dd
    return f, grad, H


def huber_objective(theta, N, D, loss, delta: float = HUBER_DELTA):
    """The objective and its gradient at one parameter vector, in the units of the data.

    Args:
        theta: (a, b, e, alpha, beta), with A = e^a, B = e^b, E = e^e.
        N, D, loss: the runs' parameter counts, token counts and final losses.
        delta: the Huber threshold on log-loss residuals.

    Returns:
        (value, gradient) as (float, ndarray of shape (5,)), suitable for `scipy.optimize.minimize(jac=True)`.
    """
    logN, logD, logL = np.log(np.asarray(N, float)), np.log(np.asarray(D, float)), np.log(np.asarray(loss, float))
    f, g, _ = objective_grad_hess(np.asarray(theta, float)[None, :], logN, logD, logL, delta=delta, hessian=False)
    return float(f[0]), g[0]
