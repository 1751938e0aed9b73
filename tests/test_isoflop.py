"""Approach 2: isoFLOP parabolas recover the law's allocation exponent beta / (alpha + beta)."""

import numpy as np
import pytest

from lightning_scaling import ChinchillaFit
from lightning_scaling.law import CHINCHILLA_PAPER_LAW, group_by_flops, isoflop_analysis, synthetic_runs


def test_recovers_the_allocation_exponent():
    law = CHINCHILLA_PAPER_LAW
    N, D, L = synthetic_runs(law, np.geomspace(1e18, 1e22, 5), sizes_per_budget=7, noise=0.0)
    res = isoflop_analysis(N, D, L)
    assert len(res.groups) == 5 and all(g.interior for g in res.groups)
    assert res.exponent == pytest.approx(law.beta / (law.alpha + law.beta), abs=0.02)


def test_agrees_with_the_parametric_fit_on_noisy_runs():
    N, D, L = synthetic_runs(CHINCHILLA_PAPER_LAW, np.geomspace(1e18, 1e21, 4), sizes_per_budget=7, noise=0.003, seed=1)
    fit = ChinchillaFit().fit(N, D, L)
    res = isoflop_analysis(N, D, L)
    assert res.exponent == pytest.approx(fit.beta_ / (fit.alpha_ + fit.beta_), abs=0.05)


def test_no_groups_returns_none():
    N = np.array([1e6, 2e6, 4e6, 8e6, 1.6e7])
    D = np.array([1e8, 1e9, 1e10, 1e11, 1e12])
    assert isoflop_analysis(N, D, 2.0 + 0 * N) is None


def test_grouping_tolerance():
    groups = group_by_flops([1.0, 1.05, 2.0, 2.1, 10.0], rtol=0.1)
    assert [list(g) for g in groups] == [[0, 1], [2, 3], [4]]


def test_minimum_outside_the_sizes_is_noted():
    law = CHINCHILLA_PAPER_LAW
    C = 1e20
    N = np.geomspace(1e6, 4e6, 4)  # all far smaller than the optimum (~1e9)
    res = isoflop_analysis(np.r_[N, N * 10], np.r_[C / (6 * N), C * 10 / (6 * N * 10)],
                           law.loss(np.r_[N, N * 10], np.r_[C / (6 * N), C * 10 / (6 * N * 10)]))
    assert res is not None
    # every size lies far below the optimum, where loss still falls with N: each group's parabola is convex with its
    # vertex beyond the largest size run, so each group is kept, flagged as not interior, with the same note
    assert len(res.groups) == 2 and not any(g.interior for g in res.groups)
    assert len(res.notes) == 2
    assert all("lies outside the sizes run" in n and n.endswith("add a run beyond that end") for n in res.notes)
