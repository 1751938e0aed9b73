"""The objective's gradient and Hessian against finite differences, and Huber's definition."""

import numpy as np
import pytest
from scipy.special import huber as scipy_huber

from lightning_scaling.law import huber, huber_objective
from lightning_scaling.law.objective import objective, objective_grad_hess


def test_huber_matches_scipy():
    r = np.linspace(-0.01, 0.01, 201)
    np.testing.assert_allclose(huber(r, 1e-3), scipy_huber(1e-3, r), rtol=0, atol=1e-18)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_matches_finite_differences(runs, seed):
    N, D, L = runs
    theta = np.array([6.0, 7.5, 0.6, 0.35, 0.37]) + np.random.default_rng(seed).normal(0, 0.2, 5)
    f, g = huber_objective(theta, N, D, L)
    eps = 1e-6
    fd = np.array([
        (huber_objective(theta + eps * e, N, D, L)[0] - huber_objective(theta - eps * e, N, D, L)[0]) / (2 * eps)
        for e in np.eye(5)
    ])
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-9 * abs(f))


def test_hessian_matches_finite_differences_of_gradient(runs):
    N, D, L = runs
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    # a point where every residual is far outside the Huber threshold keeps the finite difference smooth
    theta = np.array([[6.5, 7.0, 0.9, 0.33, 0.38]])
    _, g, H = objective_grad_hess(theta, logN, logD, logL, delta=1e-6)
    eps = 1e-6
    fd = np.empty((5, 5))
    for j in range(5):
        step = np.zeros((1, 5))
        step[0, j] = eps
        gp = objective_grad_hess(theta + step, logN, logD, logL, delta=1e-6)[1][0]
        gm = objective_grad_hess(theta - step, logN, logD, logL, delta=1e-6)[1][0]
        fd[:, j] = (gp - gm) / (2 * eps)
    np.testing.assert_allclose(H[0], fd, rtol=1e-4, atol=1e-6 * np.abs(fd).max())
    np.testing.assert_allclose(H[0], H[0].T, rtol=1e-12, atol=1e-15)


def test_batched_equals_one_at_a_time(runs):
    N, D, L = runs
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    thetas = np.array([[6.0, 7.5, 0.6, 0.35, 0.37], [5.0, 8.0, 0.5, 0.3, 0.4]])
    w = np.random.default_rng(0).integers(0, 3, size=(2, len(N))).astype(float)
    batched = objective(thetas, logN, logD, logL, w)
    single = [objective(t[None], logN, logD, logL, wi)[0] for t, wi in zip(thetas, w)]
    np.testing.assert_allclose(batched, single, rtol=1e-14)


def test_weights_count_repeated_runs(runs):
    N, D, L = runs
    theta = np.array([6.0, 7.5, 0.6, 0.35, 0.37])
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    w = np.ones(len(N))
    w[0] = 3.0
    repeated = huber_objective(theta, np.r_[N, N[0], N[0]], np.r_[D, D[0], D[0]], np.r_[L, L[0], L[0]])[0]
    assert objective(theta[None], logN, logD, logL, w)[0] == pytest.approx(repeated, rel=1e-13)
