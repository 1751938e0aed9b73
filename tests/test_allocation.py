"""Allocation identities: C = 6 N D, the first-order condition, and consistency between the four questions."""

import numpy as np
import pytest

from lightning_scaling import ChinchillaLaw, ConfigurationError
from lightning_scaling.law import (
    compute_for_loss,
    compute_optimal,
    optimal_allocation,
    params_for_tokens,
    tokens_for_params,
)

LAW = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


@pytest.mark.parametrize("C", [1e18, 5.76e23, 1e26])
def test_compute_optimal_spends_the_budget(C):
    a = compute_optimal(LAW, C)
    assert 6 * a.params * a.tokens == pytest.approx(C, rel=1e-12)
    assert a.loss == pytest.approx(float(LAW.loss(a.params, a.tokens)), rel=1e-12)


@pytest.mark.parametrize("C", [1e20, 5.76e23])
def test_compute_optimal_is_the_minimum_along_the_isoflop(C):
    a = compute_optimal(LAW, C)
    N = a.params * np.geomspace(0.5, 2.0, 101)
    L = LAW.loss(N, C / (6 * N))
    assert L.min() >= a.loss - 1e-12
    assert N[np.argmin(L)] == pytest.approx(a.params, rel=0.01)


def test_first_order_condition_on_the_frontier():
    a = compute_optimal(LAW, 1e22)
    marginal_N = LAW.alpha * LAW.A * a.params ** -LAW.alpha
    assert marginal_N == pytest.approx(LAW.beta * LAW.B * a.tokens ** -LAW.beta, rel=1e-10)


def test_fixed_budget_questions_agree_with_compute_optimal():
    a = compute_optimal(LAW, 3e21)
    assert params_for_tokens(LAW, a.tokens).params == pytest.approx(a.params, rel=1e-10)
    assert tokens_for_params(LAW, a.params).tokens == pytest.approx(a.tokens, rel=1e-10)
    b = compute_for_loss(LAW, a.loss)
    assert b.flops == pytest.approx(3e21, rel=1e-9)
    assert b.params == pytest.approx(a.params, rel=1e-9)


def test_chinchilla_paper_allocation():
    # Hoffmann et al. 2022, Table 3 (Approach 3): Gopher's budget 5.76e23 FLOPs -> about 40B parameters
    a = compute_optimal(LAW, 5.76e23)
    assert 3e10 < a.params < 5e10


def test_vectorised_allocation_matches_scalar():
    E, A, B, al, be = (np.array([v, v * 1.1]) for v in (1.69, 406.4, 410.7, 0.34, 0.28))
    N, D, L = optimal_allocation(E, A, B, al, be, 1e21)
    law2 = ChinchillaLaw(1.69 * 1.1, 406.4 * 1.1, 410.7 * 1.1, 0.34 * 1.1, 0.28 * 1.1)
    assert N[1] == pytest.approx(compute_optimal(law2, 1e21).params, rel=1e-12)


def test_target_below_E_is_an_error():
    with pytest.raises(ConfigurationError, match=r"`target_loss` must be > E = 1.69 .* got 1.5"):
        compute_for_loss(LAW, 1.5)


@pytest.mark.parametrize(
    "func, arg, match",
    [
        (compute_optimal, -1.0, r"`flops` must be a finite number > 0, got -1.0"),
        (params_for_tokens, float("nan"), r"`tokens` must be a finite number > 0, got nan"),
        (tokens_for_params, 0, r"`params` must be a finite number > 0, got 0"),
        (compute_for_loss, float("inf"), r"`target_loss` must be a finite number > 0, got inf"),
    ],
)
def test_argument_errors(func, arg, match):
    with pytest.raises(ConfigurationError, match=match):
        func(LAW, arg)


def test_law_validation():
    with pytest.raises(ConfigurationError, match=r"`alpha` must be >= 0, got -0.1"):
        ChinchillaLaw(E=1.0, A=1.0, B=1.0, alpha=-0.1, beta=0.3)
    with pytest.raises(ConfigurationError, match=r"`A` must be > 0, got 0"):
        ChinchillaLaw(E=1.0, A=0, B=1.0, alpha=0.3, beta=0.3)
    with pytest.raises(ConfigurationError, match=r"`E` must be finite, got nan"):
        ChinchillaLaw(E=float("nan"), A=1.0, B=1.0, alpha=0.3, beta=0.3)
    with pytest.raises(ConfigurationError, match=r"`E` must be >= 0, got -1"):
        ChinchillaLaw(E=-1, A=1.0, B=1.0, alpha=0.3, beta=0.3)
