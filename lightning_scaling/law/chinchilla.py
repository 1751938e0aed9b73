"""The parametric scaling law L(N, D) = E + A / N^alpha + B / D^beta.

Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models"), Approach 3, Eq. (2): the loss of a
model with N parameters trained on D tokens is an irreducible term E, plus a term that shrinks with model size,
plus a term that shrinks with data. N may be the dense parameter count or, for sparse pre-training, the average
number of non-zero parameters over training, N_avg (Jin et al. 2025, "The Journey Matters"): the law is the same,
only the N it is fed changes.

For fitting, the law is written in logs (Hoffmann et al. 2022, Sec. D.2):

    log L_hat = LSE(a - alpha log N, b - beta log D, e),   A = e^a, B = e^b, E = e^e,

which keeps A, B, E positive without constraints. `ChinchillaLaw.from_log_params` and `log_params` convert.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from lightning_scaling.errors import ConfigurationError

#: Names of the five parameters in the log (LSE) parametrisation, in the order the fitter uses.
LOG_PARAM_NAMES = ("a", "b", "e", "alpha", "beta")
#: Names of the five parameters of the law, in reporting order.
PARAM_NAMES = ("E", "A", "B", "alpha", "beta")


@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Eq. 2).

    Example:
        >>> law = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
        >>> round(float(law.loss(70e9, 1.4e12)), 3)
        1.937
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def __post_init__(self):
        for name in PARAM_NAMES:
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ConfigurationError(f"`{name}` must be finite, got {value!r}")
        for name in ("A", "B"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"`{name}` must be > 0, got {getattr(self, name)!r}")
        if self.E < 0:
            raise ConfigurationError(f"`E` must be >= 0, got {self.E!r}")
        for name in ("alpha", "beta"):  # 0 (a constant term, as a fit on its bound may give) is a valid law
            if getattr(self, name) < 0:
                raise ConfigurationError(f"`{name}` must be >= 0, got {getattr(self, name)!r}")

    # -- evaluation -------------------------------------------------------------------------------------------
    def loss(self, N, D):
        """Predicted loss for N parameters and D tokens (arrays broadcast)."""
        N = np.asarray(N, dtype=float)
        D = np.asarray(D, dtype=float)
        return self.E + self.A * N ** (-self.alpha) + self.B * D ** (-self.beta)

    # -- conversions ------------------------------------------------------------------------------------------
    @classmethod
    def from_log_params(cls, theta) -> ChinchillaLaw:
        """Build from (a, b, e, alpha, beta) of the LSE parametrisation."""
        a, b, e, alpha, beta = (float(x) for x in theta)
        return cls(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)

    def log_params(self) -> np.ndarray:
        """(a, b, e, alpha, beta) of the LSE parametrisation; e is -inf when E == 0."""
        e = math.log(self.E) if self.E > 0 else -math.inf
        return np.array([math.log(self.A), math.log(self.B), e, self.alpha, self.beta])

    def to_dict(self) -> dict:
        return {k: float(v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        return (
            f"L(N, D) = {self.E:.4g} + {self.A:.4g} / N^{self.alpha:.4f} + {self.B:.4g} / D^{self.beta:.4f}"
        )
