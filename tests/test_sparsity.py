"""The cubic sparsity schedule, its mean (Jin et al. 2025), N_avg, and argument errors."""

import numpy as np
import pytest
from scipy.integrate import quad

from lightning_scaling import ConfigurationError
from lightning_scaling.schedules import (
    average_params,
    cubic_sparsity,
    initial_params_for_average,
    mean_sparsity,
    validate_pruning_args,
)


def test_cubic_endpoints_and_shape():
    assert cubic_sparsity(0.1, 0.8) == 0.0
    assert cubic_sparsity(0.25, 0.8) == 0.0
    assert cubic_sparsity(0.75, 0.8) == 0.8
    assert cubic_sparsity(1.0, 0.8) == 0.8
    x = np.linspace(0.25, 0.75, 11)
    s = [cubic_sparsity(v, 0.8) for v in x]
    assert all(a <= b for a, b in zip(s, s[1:]))
    # Zhu & Gupta 2017, Eq. 1 evaluated by hand at 40% of the window
    assert cubic_sparsity(0.45, 0.8) == pytest.approx(0.8 * (1 - 0.6**3))


@pytest.mark.parametrize("a, b, sf", [(0.25, 0.75, 0.5), (0.0, 1.0, 0.9), (0.1, 0.3, 0.6)])
def test_mean_sparsity_is_the_integral_of_the_schedule(a, b, sf):
    integral, _ = quad(lambda t: cubic_sparsity(t, sf, a, b), 0, 1, points=[a, b])
    assert mean_sparsity(sf, a, b) == pytest.approx(integral, rel=1e-9)


def test_default_mean_is_five_eighths():
    assert mean_sparsity(1.0) == pytest.approx(0.625)


def test_average_params_round_trip():
    N_avg = average_params(1e8, 0.5, prunable_fraction=0.8)
    assert N_avg == pytest.approx(1e8 * (1 - 0.8 * 0.3125))
    assert initial_params_for_average(N_avg, 0.5, prunable_fraction=0.8) == pytest.approx(1e8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"final_sparsity": 1.0}, r"`final_sparsity` must be in \[0, 1\), got 1.0"),
        ({"final_sparsity": -0.1}, r"`final_sparsity` must be in \[0, 1\), got -0.1"),
        ({"start_fraction": -0.5}, r"`start_fraction` must be in \[0, 1\], got -0.5"),
        ({"end_fraction": 1.2}, r"`end_fraction` must be in \[0, 1\], got 1.2"),
        ({"start_fraction": 0.8, "end_fraction": 0.5},
         r"`start_fraction` must be < `end_fraction`, got start_fraction=0.8, end_fraction=0.5"),
    ],
)
def test_errors_name_the_argument(kwargs, match):
    args = {"final_sparsity": 0.5, "start_fraction": 0.25, "end_fraction": 0.75, **kwargs}
    with pytest.raises(ConfigurationError, match=match):
        validate_pruning_args(**args)
