"""Runs generated from a known law, for the demo, the tests and the benchmarks.

The design is a set of isoFLOP groups (Hoffmann et al. 2022, Approach 2): for each compute budget, model sizes
spread around the compute-optimal size on a log scale, each trained on the tokens that spend the budget. Losses
are the law's, times log-normal noise of relative size `noise` (seeded).

    >>> from lightning_scaling.law.chinchilla import ChinchillaLaw
    >>> N, D, L = synthetic_runs(ChinchillaLaw(1.69, 406.4, 410.7, 0.34, 0.28), [1e18, 1e19], seed=0)
    >>> len(N), float(6 * N[0] * D[0])
    (10, 1e+18)
"""

from __future__ import annotations

import numpy as np

from lightning_scaling.law.allocation import optimal_allocation
from lightning_scaling.law.chinchilla import ChinchillaLaw
from lightning_scaling.schedules.flops import FLOPS_PER_PARAM_TOKEN

#: Hoffmann et al. 2022, Eq. 10: the published Chinchilla law, the demo's ground truth.
CHINCHILLA_PAPER_LAW = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def synthetic_runs(law: ChinchillaLaw, budgets, sizes_per_budget: int = 5, spread: float = 16.0,
                   noise: float = 0.005, seed: int = 0):
    """(N, D, loss) arrays for isoFLOP groups at each compute budget.

    Args:
        law: the true law.
        budgets: compute budgets C in FLOPs (C = 6 N D).
        sizes_per_budget: model sizes per budget, log-spaced around the compute-optimal N.
        spread: ratio between the largest and smallest size in a group.
        noise: standard deviation of the multiplicative log-normal noise on the loss.
        seed: seed of the noise.
    """
    rng = np.random.default_rng(seed)
    N_list, D_list = [], []
    for C in np.asarray(budgets, float):
        N_opt, _, _ = optimal_allocation(law.E, law.A, law.B, law.alpha, law.beta, C)
        N = float(N_opt) * np.geomspace(1 / np.sqrt(spread), np.sqrt(spread), sizes_per_budget)
        N_list.append(N)
        D_list.append(C / (FLOPS_PER_PARAM_TOKEN * N))
    N = np.concatenate(N_list)
    D = np.concatenate(D_list)
    L = law.loss(N, D) * np.exp(rng.normal(0.0, noise, N.size))
    return N, D, L
