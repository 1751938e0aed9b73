"""Bootstrap: seeded reproducibility, sensible intervals, and argument errors."""

import numpy as np
import pytest
from conftest import TRUE_LAW, grid_runs

from lightning_scaling import ChinchillaFit, ConfigurationError
from lightning_scaling.law import compute_optimal
from lightning_scaling.law.bootstrap import bootstrap


@pytest.fixture(scope="module")
def fit():
    return ChinchillaFit().fit(*grid_runs(noise=0.01, seed=5))


def test_same_seed_same_intervals(fit):
    a = bootstrap(fit, 200, seed=7)
    b = bootstrap(fit, 200, seed=7)
    for name in ("E", "A", "B", "alpha", "beta"):
        np.testing.assert_array_equal(a.samples[name], b.samples[name])
    c = bootstrap(fit, 200, seed=8)
    assert not np.array_equal(a.samples["alpha"], c.samples["alpha"])


def test_intervals_contain_the_estimate_and_widen_with_confidence(fit):
    narrow = bootstrap(fit, 300, seed=0, confidence=0.5)
    wide = bootstrap(fit, 300, seed=0, confidence=0.95)
    for name in ("E", "alpha", "beta"):
        lo, hi = narrow.interval(name)
        assert lo <= getattr(fit, name + "_") <= hi, name
        wlo, whi = wide.interval(name)
        assert wlo <= lo and hi <= whi


def test_replicates_are_real_optima(fit):
    """Each replicate's parameters minimise its own resampled objective: refitting one from scratch agrees."""
    res = bootstrap(fit, 20, seed=3)
    rng = np.random.default_rng(3)
    draws = rng.integers(0, fit.n_runs_, size=(20, fit.n_runs_))
    for k in (0, 7):
        idx = draws[k]
        ref = ChinchillaFit().fit(fit.N_[idx], fit.D_[idx], fit.loss_[idx])
        assert res.samples["alpha"][k] == pytest.approx(ref.alpha_, abs=1e-6)
        assert res.samples["E"][k] == pytest.approx(ref.E_, rel=1e-6)


def test_allocation_intervals_cover_truth_on_easy_data(fit):
    res = bootstrap(fit, 400, seed=0, confidence=0.95)
    C = 1e21
    iv = res.allocation_intervals(C)
    truth = compute_optimal(TRUE_LAW, C)
    assert iv["params"][0] <= truth.params <= iv["params"][1]
    assert iv["loss"][0] <= truth.loss <= iv["loss"][1]
    lo, hi = res.loss_interval(1e8, 1e9)
    assert lo <= float(TRUE_LAW.loss(1e8, 1e9)) * 1.01 and hi >= float(TRUE_LAW.loss(1e8, 1e9)) * 0.99


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_resamples": 5}, r"`n_resamples` must be an integer >= 10, got 5"),
        ({"confidence": 1.0}, r"`confidence` must be in \(0, 1\), got 1.0"),
        ({"n_starts": 0}, r"`n_starts` must be an integer >= 1, got 0"),
    ],
)
def test_argument_errors(fit, kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        bootstrap(fit, **{"n_resamples": 100, **kwargs})


def test_unknown_interval_name(fit):
    with pytest.raises(ConfigurationError,
                       match=r"`name` must be one of \['A', 'B', 'E', 'alpha', 'beta'\], got 'gamma'"):
        bootstrap(fit, 20).interval("gamma")
