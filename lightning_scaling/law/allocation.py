"""Compute allocation under the law L(N, D) = E + A / N^alpha + B / D^beta with C = 6 N D.

Minimising L at fixed compute C = 6 N D (Hoffmann et al. 2022, Eq. 4 and Appendix D.2):

    G = (alpha A / (beta B))^(1 / (alpha + beta))
    N_opt(C) = G (C / 6)^(beta / (alpha + beta)),   D_opt(C) = (1 / G) (C / 6)^(alpha / (alpha + beta))

Along that frontier the two reducible terms stand in a fixed ratio, alpha A N^-alpha = beta B D^-beta (the
first-order condition), which gives the other allocations in closed form:

- `params_for_tokens(D)`: the N for which D tokens is compute-optimal, N = (alpha A / (beta B D^-beta))^(1/alpha);
- `tokens_for_params(N)`: the D for which N is compute-optimal, D = (beta B / (alpha A N^-alpha))^(1/beta);
- `compute_for_loss(L)`: the least compute reaching loss L. On the frontier A N^-alpha = (L - E) beta/(alpha+beta)
  and B D^-beta = (L - E) alpha/(alpha+beta); no compute reaches L <= E.

The functions take plain floats or numpy arrays for the law's parameters, so a bootstrap's samples go through
in one call. `Allocation` bundles the answer with the law that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.law.chinchilla import ChinchillaLaw
from lightning_scaling.schedules.flops import FLOPS_PER_PARAM_TOKEN, training_compute


@dataclass(frozen=True)
class Allocation:
    """A run size: parameters N, tokens D, compute C = 6 N D and the loss the law predicts for it."""

    params: float
    tokens: float
    flops: float
    loss: float

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params

    def to_dict(self) -> dict:
        return {
            "params": float(self.params),
            "tokens": float(self.tokens),
            "flops": float(self.flops),
            "loss": float(self.loss),
            "tokens_per_param": float(self.tokens_per_param),
        }


def _positive(name: str, value) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ConfigurationError(f"`{name}` must be a finite number > 0, got {value!r}")
    return arr


def optimal_allocation(E, A, B, alpha, beta, C):
    """(N_opt, D_opt, L_opt) at compute C; every argument may be an array (they broadcast)."""
    E, A, B, alpha, beta, C = (np.asarray(x, float) for x in (E, A, B, alpha, beta, C))
    # bootstrap replicates with an exponent on its bound (0) give infinite allocations: inf, not a warning
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        s = alpha + beta
        G = (alpha * A / (beta * B)) ** (1.0 / s)
        N = G * (C / FLOPS_PER_PARAM_TOKEN) ** (beta / s)
        D = (C / FLOPS_PER_PARAM_TOKEN) ** (alpha / s) / G
        return N, D, E + A * N ** (-alpha) + B * D ** (-beta)


def compute_optimal(law: ChinchillaLaw, flops) -> Allocation:
    """The compute-optimal run for a budget of `flops` (C = 6 N D)."""
    C = float(_positive("flops", flops))
    N, D, L = optimal_allocation(law.E, law.A, law.B, law.alpha, law.beta, C)
    return Allocation(float(N), float(D), C, float(L))


def params_for_tokens(law: ChinchillaLaw, tokens) -> Allocation:
    """Best model size for a fixed token budget: the N for which `tokens` is the compute-optimal D."""
    D = float(_positive("tokens", tokens))
    N = (law.alpha * law.A / (law.beta * law.B * D ** (-law.beta))) ** (1.0 / law.alpha)
    return Allocation(float(N), D, training_compute(N, D), float(law.loss(N, D)))


def tokens_for_params(law: ChinchillaLaw, params) -> Allocation:
    """Best token count for a fixed model size: the D for which `params` is the compute-optimal N."""
    N = float(_positive("params", params))
    D = (law.beta * law.B / (law.alpha * law.A * N ** (-law.alpha))) ** (1.0 / law.beta)
    return Allocation(N, float(D), training_compute(N, D), float(law.loss(N, D)))


def compute_for_loss(law: ChinchillaLaw, target_loss) -> Allocation:
    """The least compute (and its N, D) whose compute-optimal run reaches `target_loss`.

    Raises:
        ConfigurationError: `target_loss` <= E, which no amount of compute reaches.
    """
    L = float(_positive("target_loss", target_loss))
    if L <= law.E:
        raise ConfigurationError(
            f"`target_loss` must be > E = {law.E:.6g} (the irreducible loss, reached only at infinite compute), "
            f"got {L!r}"
        )
    s = law.alpha + law.beta
    N = (law.A / ((L - law.E) * law.beta / s)) ** (1.0 / law.alpha)
    D = (law.B / ((L - law.E) * law.alpha / s)) ** (1.0 / law.beta)
    return Allocation(float(N), float(D), training_compute(N, D), L)
