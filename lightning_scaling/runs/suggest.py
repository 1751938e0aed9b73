"""Runs to add when the data cannot constrain the law yet: an isoFLOP group at the largest compute so far."""

from __future__ import annotations

import math

import numpy as np

from ..schedules.flops import FLOPS_PER_PARAM_TOKEN, training_compute

TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022, Table 3: ~20 tokens per parameter is compute-optimal


def suggest_runs(N, D, n_more: int = 3, tokens_per_param: float = TOKENS_PER_PARAM,
                 at_flops: float | None = None) -> list[dict]:
    """Runs that would best constrain a fit of the law, given the runs so far.

    The design is an isoFLOP group (Hoffmann et al. 2022, Approach 2) at the largest compute so far: three model
    sizes around the compute-optimal size (a third of it, it, three times it) with the tokens that spend the same
    compute. Such a group pins both exponents (varying N and D against each other) and its curvature pins E.
    Runs already present are skipped; if a group is not enough, the next one is at four times the compute.

    Args:
        N, D: the runs so far (possibly empty).
        n_more: how many runs to propose.
        tokens_per_param: the D/N ratio assumed optimal before any fit exists.
        at_flops: the compute of the first group (default: the largest so far).

    Returns:
        A list of ``{"params": N, "tokens": D, "flops": 6 N D}`` dicts.
    """
    N = np.asarray(N, float)
    D = np.asarray(D, float)
    C = float(training_compute(N, D).max()) if len(N) else FLOPS_PER_PARAM_TOKEN * tokens_per_param * 1e12
    C = float(at_flops) if at_flops is not None else C
    have = {(round(math.log(n), 2), round(math.log(d), 2)) for n, d in zip(N, D)}
    out: list[dict] = []
    while len(out) < n_more:
        N_c = math.sqrt(C / (FLOPS_PER_PARAM_TOKEN * tokens_per_param))
        for factor in (1.0, 1 / 3, 3.0, 1 / 9, 9.0):
            n = float(f"{N_c * factor:.3g}")
            d = float(f"{C / (FLOPS_PER_PARAM_TOKEN * n):.3g}")
            key = (round(math.log(n), 2), round(math.log(d), 2))
            if key in have:
                continue
            have.add(key)
            out.append({"params": n, "tokens": d, "flops": training_compute(n, d)})
            if len(out) >= n_more:
                break
        C *= 4.0
    return out
