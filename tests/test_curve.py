"""The learning-rate annealing law (Tissue et al. 2024) in the pure core: the schedule's areas, and a fit that
recovers the law from one run's curve and predicts the same model under another schedule."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_scaling.curves.annealing import AnnealingLaw, schedule_areas
from lightning_scaling.curves.shared_fit import fit_curve
from lightning_scaling.errors import ScalingDataError

TRUE = AnnealingLaw(L0=2.0, A=1.5, C=0.1, alpha=0.45)
T, PEAK, WARMUP = 3000, 3e-3, 100
STEPS = np.arange(1, T + 1)


def warmup(s):
    return np.minimum(1.0, s / WARMUP)


def cosine(s):
    return PEAK * warmup(s) * 0.5 * (1 + np.cos(np.pi * np.clip((s - WARMUP) / (T - WARMUP), 0, 1)))


def wsd(s):  # warmup, stable, linear cooldown over the last 20%
    return PEAK * warmup(s) * np.clip((T - s) / (0.2 * T), 0, 1)


def power(s):  # the Power schedule's shape: a power law in the tokens, exponential decay over the last 10%
    tail = np.where(s > 0.9 * T, (np.exp(-5 * (s - 0.9 * T) / (0.1 * T)) - np.exp(-5)) / (1 - np.exp(-5)), 1.0)
    return warmup(s) * np.minimum(PEAK, 0.05 * s ** -0.51) * tail


def constant(s):
    return PEAK * warmup(s)


def curve(schedule, noise=0.002, seed=0, every=10):
    lr = schedule(STEPS)
    S1, S2 = schedule_areas(STEPS, lr)
    loss = TRUE.loss(S1, S2) * np.exp(np.random.default_rng(seed).normal(0, noise, T))
    at = STEPS[every - 1::every]
    return at, lr[at - 1], loss[at - 1]


def naive_areas(lr, momentum):
    S1 = S2 = m = 0.0
    out1, out2 = [], []
    for i, eta in enumerate(lr):
        S1 += eta
        drop = max(lr[i - 1] - eta, 0.0) if i else 0.0
        m = momentum * m + drop
        S2 += m
        out1.append(S1)
        out2.append(S2)
    return np.array(out1), np.array(out2)


@pytest.mark.parametrize("momentum", [0.999, 0.9, 0.5, 0.0])
def test_areas_match_the_recursion(momentum):
    lr = cosine(STEPS)
    S1, S2 = schedule_areas(STEPS, lr, momentum)
    want1, want2 = naive_areas(lr, momentum)
    np.testing.assert_allclose(S1, want1, rtol=1e-12)
    np.testing.assert_allclose(S2, want2, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("schedule", [wsd, lambda s: np.full(s.shape, PEAK)], ids=["wsd", "constant from step 1"])
def test_sparse_logging_interpolates_the_schedule_between_points(schedule):
    lr = schedule(STEPS)  # piecewise linear: interpolation between logged steps is exact
    at = STEPS[9::10]  # before the first logged step, the warmup's line extended back
    S1, S2 = schedule_areas(at, lr[at - 1])
    full1, full2 = schedule_areas(STEPS, lr)
    np.testing.assert_allclose(S1, full1[at - 1], rtol=1e-9)
    np.testing.assert_allclose(S2, full2[at - 1], rtol=1e-9, atol=1e-15)


def test_warmup_adds_to_the_forward_area_only():
    S1, S2 = schedule_areas(STEPS[:WARMUP], constant(STEPS[:WARMUP]))
    assert np.all(S2 == 0.0) and S1[-1] == pytest.approx(PEAK * (WARMUP + 1) / 2)


@pytest.mark.parametrize("schedule", [cosine, wsd, power])
def test_the_fit_recovers_the_law_from_one_curve(schedule):
    law = fit_curve(*curve(schedule))
    assert law.alpha == pytest.approx(TRUE.alpha, rel=0.05)
    assert law.A == pytest.approx(TRUE.A, rel=0.1)
    assert law.C == pytest.approx(TRUE.C, rel=0.15)
    assert law.L0 == pytest.approx(TRUE.L0, rel=0.02)


@pytest.mark.parametrize("fitted, other", [(wsd, cosine), (cosine, wsd), (cosine, power)])
def test_a_law_fitted_on_one_schedule_predicts_another(fitted, other):
    law = fit_curve(*curve(fitted))
    at, lr, loss = curve(other, noise=0.0, seed=1)
    late = at > 0.5 * T
    error = np.abs(law.loss(*schedule_areas(at, lr))[late] / loss[late] - 1)
    assert error.mean() < 0.005, error.mean()


def test_the_annealing_term_lowers_the_loss():
    """The sign of C S2 matters: with +C S2 the cooldown's drop would not be fitted."""
    law = fit_curve(*curve(wsd))
    at, lr, loss = curve(wsd, noise=0.0)
    S1, S2 = schedule_areas(at, lr)
    no_annealing = AnnealingLaw(law.L0, law.A, 0.0, law.alpha).loss(S1, S2)
    assert loss[-1] < no_annealing[-1] - 0.05 and abs(law.loss(S1, S2)[-1] / loss[-1] - 1) < 0.005


@pytest.mark.parametrize("steps, lr, loss, message", [
    ([1, 2, 2, 3, 4], [1e-3] * 5, [3.0] * 5, "point 2: `step` 2 does not increase"),
    ([1, 2, 3, 4, 5], [1e-3, -1e-3, 1e-3, 1e-3, 1e-3], [3.0] * 5, "point 1: `lr` is"),
    ([1, 2, 3, 4, 5], [1e-3] * 5, [3.0, 3.0, float("nan"), 3.0, 3.0], "point 2: `loss` is"),
    ([1, 2, 3], [1e-3] * 3, [3.0] * 3, "at least 5 observed points"),
    ([1, 2, 3, 4, 5], [0.0] * 5, [3.0] * 5, "every learning rate is 0"),
])
def test_bad_curves_name_the_point(steps, lr, loss, message):
    with pytest.raises(ScalingDataError, match=message):
        fit_curve(steps, lr, loss)
