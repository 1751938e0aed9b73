"""ChinchillaFit: recovery of known constants, invariances, the estimator contract and every error."""

import math
import warnings

import numpy as np
import pytest
from conftest import TRUE_LAW, grid_runs

from lightning_scaling import (
    ChinchillaFit,
    ChinchillaLaw,
    ConfigurationError,
    FitWarning,
    InsufficientRunsError,
    NotFittedError,
    ScalingDataError,
)


def test_recovers_known_constants_from_noisy_runs():
    N, D, L = grid_runs(noise=0.005, seed=3)
    fit = ChinchillaFit().fit(N, D, L)
    assert fit.alpha_ == pytest.approx(TRUE_LAW.alpha, abs=0.03)
    assert fit.beta_ == pytest.approx(TRUE_LAW.beta, abs=0.03)
    assert fit.E_ == pytest.approx(TRUE_LAW.E, rel=0.05)
    # the fitted law predicts the truth far better than the noise level inside the data's range
    np.testing.assert_allclose(fit.predict(N, D), TRUE_LAW.loss(N, D), rtol=0.006)


def test_recovers_exact_constants_without_noise():
    N, D, L = grid_runs(noise=0.0)
    fit = ChinchillaFit().fit(N, D, L)
    for name in ("E", "A", "B", "alpha", "beta"):
        assert getattr(fit, name + "_") == pytest.approx(getattr(TRUE_LAW, name), rel=1e-6), name
    assert fit.objective_ < 1e-20


def test_invariant_to_rescaling_units():
    N, D, L = grid_runs(noise=0.01, seed=1)
    base = ChinchillaFit().fit(N, D, L)
    k_N, k_D = 1e-6, 1e3  # millions of parameters, thousands of tokens... any unit
    scaled = ChinchillaFit().fit(N * k_N, D * k_D, L)
    assert scaled.objective_ == pytest.approx(base.objective_, rel=1e-9)
    assert scaled.alpha_ == pytest.approx(base.alpha_, rel=1e-6)
    assert scaled.beta_ == pytest.approx(base.beta_, rel=1e-6)
    assert scaled.E_ == pytest.approx(base.E_, rel=1e-6)
    # A / N^alpha is unit-free: with N -> k N, A -> A k^alpha
    assert scaled.A_ == pytest.approx(base.A_ * k_N**base.alpha_, rel=1e-5)
    assert scaled.B_ == pytest.approx(base.B_ * k_D**base.beta_, rel=1e-5)


def test_estimator_contract():
    est = ChinchillaFit(delta=2e-3, n_starts=4)
    assert (est.delta, est.n_starts) == (2e-3, 4)
    assert not hasattr(est, "E_")
    N, D, L = grid_runs()
    assert est.fit(N, D, L) is est
    assert isinstance(est.law_, ChinchillaLaw)
    assert est.n_runs_ == len(N)
    assert est.params_column_ == "params"
    assert "objective=" in repr(est) and repr(ChinchillaFit()) == "ChinchillaFit(not fitted)"


def test_records_which_N_was_used():
    N, D, L = grid_runs()
    fit = ChinchillaFit().fit(N, D, L, params_column="params_avg")
    assert fit.params_column_ == "params_avg"
    assert fit.to_dict()["params_column"] == "params_avg"


@pytest.mark.parametrize("call", ["predict", "law_", "to_dict", "score"])
def test_not_fitted_error(call):
    fit = ChinchillaFit()
    with pytest.raises(NotFittedError, match=r"not fitted yet: call `fit\(N, D, loss\)`"):
        attr = getattr(fit, call)
        if callable(attr):
            attr(*([1e6, 1e9] if call == "predict" else [[1e6] * 5, [1e9] * 5, [3.0] * 5] if call == "score" else []))


@pytest.mark.parametrize(
    "column, value, match",
    [
        (0, math.nan, r"row 4: `params` is NaN"),
        (1, math.inf, r"row 4: `tokens` is infinite"),
        (2, 0.0, r"row 4: `loss` is not positive \(0.0\)"),
        (0, -5.0, r"row 4: `params` is not positive \(-5.0\)"),
    ],
)
def test_bad_values_name_the_row(column, value, match):
    data = [list(a) for a in grid_runs()]
    data[column][4] = value
    with pytest.raises(ScalingDataError, match=match):
        ChinchillaFit().fit(*data)


def test_labels_name_the_run():
    N, D, L = grid_runs()
    L = L.copy()
    L[2] = math.nan
    labels = [f"run-{i}" for i in range(len(N))]
    with pytest.raises(ScalingDataError, match=r"run-2: `loss` is NaN"):
        ChinchillaFit().fit(N, D, L, labels=labels)


def test_lengths_must_match():
    with pytest.raises(ScalingDataError, match=r"same length, got \{'params': 3, 'tokens': 2, 'loss': 3\}"):
        ChinchillaFit().fit([1, 2, 3], [1, 2], [1, 2, 3])


def test_non_numeric_input():
    with pytest.raises(ScalingDataError, match=r"`params` must be numbers"):
        ChinchillaFit().fit(["a", "b"], [1, 2], [1, 2])


def test_too_few_runs_says_which_to_add():
    N, D, L = grid_runs()
    with pytest.raises(InsufficientRunsError, match=r"at least 5 runs \(got 4\).*Add runs such as: N=") as info:
        ChinchillaFit().fit(N[:4], D[:4], L[:4])
    assert len(info.value.suggestions) >= 1
    s = info.value.suggestions[0]
    assert s["flops"] == pytest.approx(6 * s["params"] * s["tokens"])


def test_too_few_distinct_sizes():
    N, D = np.repeat([1e7, 1e8], 4), np.tile([1e8, 1e9, 1e10, 1e11], 2)
    with pytest.raises(InsufficientRunsError, match=r"at least 3 distinct parameter counts \(got 2: 1e\+07, 1e\+08\)"):
        ChinchillaFit().fit(N, D, TRUE_LAW.loss(N, D))


def test_too_few_distinct_token_counts():
    N, D = np.tile([1e7, 1e8, 1e9], 2), np.repeat([1e9, 1e10], 3)
    with pytest.raises(InsufficientRunsError, match=r"at least 3 distinct token counts \(got 2"):
        ChinchillaFit().fit(N, D, TRUE_LAW.loss(N, D))


def test_boundary_fit_is_flagged():
    # a law with no irreducible loss: E is driven to its bound 0 and the fit says so
    law = ChinchillaLaw(E=0.0, A=480.0, B=2100.0, alpha=0.35, beta=0.37)
    N, D, L = grid_runs(law=law, noise=0.0)
    with pytest.warns(FitWarning, match=r"E = .* is at its lower bound 0"):
        fit = ChinchillaFit().fit(N, D, L)
    assert fit.boundary_ and "add runs at larger compute" in fit.boundary_[0]


def test_exponent_boundary_is_flagged():
    # loss does not depend on N at all: alpha has nothing to fit
    N, D, _ = grid_runs()
    L = 2.0 + 300.0 * D ** -0.3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = ChinchillaFit().fit(N, D, L)
    # alpha, an exponent, sits at the bottom of its search interval [0, exponent_max]: the message names the search
    # bound ("lower bound 0" is E's message, and E is well inside its range here)
    assert len(fit.boundary_) == 1, fit.boundary_
    assert fit.boundary_[0].startswith("alpha = ") and "is on its search bound [0, 3.0]" in fit.boundary_[0]
    assert any(issubclass(w.category, FitWarning) for w in caught)


def test_interior_fit_has_no_boundary_messages():
    N, D, L = grid_runs()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitWarning)
        fit = ChinchillaFit().fit(N, D, L)
    assert fit.boundary_ == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"delta": 0}, r"`delta` must be a finite number > 0, got 0"),
        ({"exponent_max": 0.1}, r"`exponent_max` must be in \[0.5, 10\], got 0.1"),
        ({"grid_step": 1.0}, r"`grid_step` must be in \[0.001, 0.25\], got 1.0"),
        ({"n_starts": 0}, r"`n_starts` must be an integer >= 1, got 0"),
        ({"min_runs": 2}, r"`min_runs` must be an integer >= 5, got 2"),
        ({"min_distinct": 1}, r"`min_distinct` must be an integer >= 3, got 1"),
    ],
)
def test_option_errors(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        ChinchillaFit(**kwargs).fit(*grid_runs())


def test_params_column_error():
    with pytest.raises(ConfigurationError, match=r"`params_column` must be one of \('params', 'params_avg'\), got 'n'"):
        ChinchillaFit().fit(*grid_runs(), params_column="n")


def test_score_on_held_out_runs():
    N, D, L = grid_runs(noise=0.005)
    fit = ChinchillaFit().fit(N[:20], D[:20], L[:20])
    assert 0 < fit.score(N[20:], D[20:], L[20:]) < 1e-3 * 5
