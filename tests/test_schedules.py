"""Learning-rate schedules: the Power formula at chosen token counts, warmup, decay, WSD, cosine, and errors."""

import math

import pytest

from lightning_scaling import ConfigurationError
from lightning_scaling.schedules import PowerSchedule, decay_factor, power_lr


@pytest.mark.parametrize("n", [1e3, 1e6, 3.7e8, 1e12])
def test_power_formula(n):
    # Shen et al. 2024, Eq. 6 with the paper's a, b, lr_max and a batch of 1024 sequences
    assert power_lr(n, 1024) == pytest.approx(min(0.02, 1024 * 4 * n ** -0.51), rel=1e-15)


def test_power_is_capped_and_finite_at_zero():
    assert power_lr(0, 1024) == 0.02
    assert power_lr(10, 1024) == 0.02


def test_no_warmup_no_total_is_pure_power():
    s = PowerSchedule(batch_size=16)
    for n in (0, 5e4, 1e6, 1e9):
        assert s.lr(n) == power_lr(n, 16)


def test_warmup_is_linear_to_the_power_value():
    s = PowerSchedule(batch_size=16, warmup_tokens=1e6)
    end = power_lr(1e6, 16)
    assert s.lr(0) == 0.0
    assert s.lr(2.5e5) == pytest.approx(0.25 * end, rel=1e-14)
    assert s.lr(1e6) == pytest.approx(end, rel=1e-14)
    assert s.lr(4e6) == pytest.approx(power_lr(4e6, 16), rel=1e-14)


@pytest.mark.parametrize("shape", ["exponential", "linear", "1-sqrt"])
def test_decay_to_zero_over_the_last_fraction(shape):
    s = PowerSchedule(batch_size=16, warmup_tokens=1e5, total_tokens=1e7, decay_fraction=0.1, decay=shape)
    start = 9e6
    assert s.lr(start - 1) == pytest.approx(power_lr(start - 1, 16), rel=1e-12)
    assert s.lr(start) == pytest.approx(power_lr(start, 16), rel=1e-14)
    assert s.lr(1e7) == 0.0
    mid = s.lr(start + 0.5e6)
    assert mid == pytest.approx(power_lr(start, 16) * decay_factor(0.5, shape), rel=1e-14)
    values = [s.lr(start + k * 1e5) for k in range(11)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_decay_shapes():
    assert decay_factor(0.5, "linear") == 0.5
    assert decay_factor(0.25, "1-sqrt") == 0.5
    assert decay_factor(0.0, "exponential") == 1.0 and decay_factor(1.0, "exponential") == 0.0
    assert decay_factor(0.2, "exponential") == pytest.approx((math.exp(-1) - math.exp(-5)) / (1 - math.exp(-5)))


def test_zero_decay_fraction_keeps_the_power_value_to_the_end():
    s = PowerSchedule(batch_size=16, total_tokens=1e7, decay_fraction=0.0)
    assert s.lr(1e7 - 1) == pytest.approx(power_lr(1e7 - 1, 16))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"a": 0}, r"`a` must be a number > 0, got 0"),
        ({"b": 0.2}, r"`b` must be in \[-1, 0\), got 0.2"),
        ({"lr_max": -1}, r"`lr_max` must be in \(0, 10\], got -1"),
        ({"warmup_tokens": -5}, r"`warmup_tokens` must be a number >= 0, got -5"),
        ({"total_tokens": 0}, r"`total_tokens` must be a number > 0 or None, got 0"),
        ({"decay_fraction": 1.5}, r"`decay_fraction` must be in \[0, 1\], got 1.5"),
        ({"decay": "cosine"}, r"`decay` must be one of \('exponential', 'linear', '1-sqrt'\), got 'cosine'"),
        ({"total_tokens": 100, "warmup_tokens": 95}, r"`warmup_tokens` must end before the decay phase starts at 90"),
        ({"batch_size": 0}, r"`batch_size` must be a number > 0, got 0"),
    ],
)
def test_errors_name_the_argument(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        PowerSchedule(**{"batch_size": 16, **kwargs})
