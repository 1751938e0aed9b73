"""Bootstrap intervals for the fitted law, the compute-optimal allocation and predicted losses.

As in the Epoch replication (Besiroglu et al. 2024, Sec. 3): resample the runs with replacement, refit, and report
percentile intervals. A replicate is the same problem with integer weights on the runs (how often each run was
drawn), so all replicates are optimised together by the batched Newton method of `search.py`, starting from the
full-data optimum and from the runner-up basins, and each keeps its best (timings: `benchmarks/fit_speed.py`).

    >>> import numpy as np
    >>> from lightning_scaling import ChinchillaFit, ChinchillaLaw
    >>> from lightning_scaling.law.bootstrap import bootstrap
    >>> law = ChinchillaLaw(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.37)
    >>> N, D = (x.ravel() for x in np.meshgrid([1e7, 3e7, 1e8, 3e8], [2e8, 1e9, 5e9, 2e10]))
    >>> noisy = law.loss(N, D) * np.exp(np.random.default_rng(0).normal(0, 0.01, N.size))
    >>> result = bootstrap(ChinchillaFit().fit(N, D, noisy), n_resamples=200, seed=0)
    >>> lo, hi = result.interval("alpha")
    >>> bool(lo < 0.34 < hi)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.law.allocation import optimal_allocation
from lightning_scaling.law.chinchilla import PARAM_NAMES
from lightning_scaling.law.form import DEFAULT_CONFIDENCE
from lightning_scaling.law.objective import objective
from lightning_scaling.law.search import newton
from lightning_scaling.options import OPEN_UNIT, Integer, Resamples, validate


def percentile_interval(values, confidence: float) -> tuple[float, float]:
    """The central `confidence` percentile interval of replicate values, NaN counted as +inf (a replicate whose
    exponent sits on its bound can send an allocation to infinity: it counts as the extreme it is).

    >>> percentile_interval(np.arange(1, 1001), 0.8)
    (100.0, 900.0)
    """
    q = 100.0 * (1.0 - confidence) / 2.0
    values = np.asarray(values, float)
    values = np.where(np.isnan(values), np.inf, values)
    lo, hi = np.percentile(values, [q, 100.0 - q], method="inverted_cdf")
    return float(lo), float(hi)


@dataclass
class BootstrapResult:
    """Parameter samples from bootstrap replicates, and percentile intervals derived from them.

    Attributes:
        samples: name -> array of shape (n_resamples,), for E, A, B, alpha, beta.
        confidence: the central probability of the intervals (0.8 -> 10th to 90th percentile).
        seed: the seed that reproduces the replicates.
    """

    samples: dict[str, np.ndarray]
    confidence: float = DEFAULT_CONFIDENCE
    seed: int | None = None
    n_failed: int = 0

    @property
    def n_resamples(self) -> int:
        return len(self.samples["E"])

    def _percentiles(self, values) -> tuple[float, float]:
        return percentile_interval(values, self.confidence)

    def interval(self, name: str) -> tuple[float, float]:
        """Percentile interval of a law parameter (E, A, B, alpha, beta)."""
        if name not in self.samples:
            raise ConfigurationError(f"`name` must be one of {sorted(self.samples)}, got {name!r}")
        return self._percentiles(self.samples[name])

    def parameter_intervals(self) -> dict[str, tuple[float, float]]:
        return {name: self.interval(name) for name in PARAM_NAMES}

    def allocation_samples(self, flops) -> dict[str, np.ndarray]:
        """Per replicate: compute-optimal params, tokens and predicted loss at budget `flops`."""
        s = self.samples
        N, D, L = optimal_allocation(s["E"], s["A"], s["B"], s["alpha"], s["beta"], float(flops))
        return {"params": N, "tokens": D, "loss": L}

    def allocation_intervals(self, flops) -> dict[str, tuple[float, float]]:
        """Percentile intervals of N_opt, D_opt and the predicted optimal loss at budget `flops`."""
        return {k: self._percentiles(v) for k, v in self.allocation_samples(flops).items()}

    def loss_interval(self, N, D) -> tuple[float, float]:
        """Percentile interval of the predicted loss of a run with N parameters and D tokens."""
        s = self.samples
        L = s["E"] + s["A"] * float(N) ** (-s["alpha"]) + s["B"] * float(D) ** (-s["beta"])
        return self._percentiles(L)


CHUNK = 2**15  # problems x runs per Newton batch
PILOT = 100  # replicates that try every start; the others try the runner-up basins only if one of these needed them
# The bootstrap's options and their allowed values.
BOOTSTRAP_CONSTRAINTS = {
    "n_resamples": Resamples(allow_zero=False),
    "confidence": OPEN_UNIT,
    "n_starts": Integer(1),
}


def resample_counts(rng, n: int, n_resamples: int, groups=None) -> np.ndarray:
    """(n_resamples, n) integer weights: how often each point is drawn in each replicate. With `groups` (a run index
    per point: the checkpoints of one run, `curves.correction`) whole runs are drawn, each point weighted by how often
    its run was, so that points of one run, which are not independent, never count as independent evidence."""
    if groups is None:
        draws = rng.integers(0, n, size=(n_resamples, n))
        counts = np.zeros((n_resamples, n))
        np.add.at(counts, (np.repeat(np.arange(n_resamples), n), draws.ravel()), 1.0)
        return counts
    groups = np.asarray(groups, int)
    g = int(groups.max()) + 1
    return resample_counts(rng, g, n_resamples)[:, groups]


def _optimise(starts, counts, cN, cD, logL, delta, exponent_max):
    """Each replicate (row of `counts`) minimised from every start; the (R, S, 5) minimisers and (R, S) values."""
    R, S = len(counts), len(starts)
    chunk = max(1, CHUNK // (S * len(cN)))  # replicates per batch: (problems x runs) arrays that stay in cache
    thetas, fs = [], []
    for lo in range(0, R, chunk):
        part = counts[lo:lo + chunk]
        theta0 = np.repeat(starts[None, :, :], len(part), axis=0).reshape(-1, 5)
        theta, f = newton(theta0, cN, cD, logL, np.repeat(part, S, axis=0), delta=delta, exponent_max=exponent_max)
        thetas.append(theta.reshape(len(part), S, 5))
        fs.append(f.reshape(len(part), S))
    return np.concatenate(thetas), np.concatenate(fs)


def _replicate_optima(starts, counts, cN, cD, logL, delta, exponent_max):
    """The best minimiser of each replicate over the starts (the full-data optimum first, then runner-up basins).

    A pilot of `PILOT` replicates starts from every basin. When none of them ends lower from a runner-up basin
    than from the full-data optimum (the usual case once there are many runs: resampling does not move the optimum
    to another basin), the other replicates start from the full-data optimum alone; otherwise every replicate
    tries every basin. This bounds the bootstrap's cost by about one start per replicate on large stores.
    """
    R = len(counts)
    pilot = min(R, PILOT)
    theta, f = _optimise(starts, counts[:pilot], cN, cD, logL, delta, exponent_max)
    best = theta[np.arange(pilot), np.argmin(f, axis=1)]
    if pilot == R:
        return best
    gain = f[:, 0] - f.min(axis=1)
    needs_all = bool(np.any(gain > 1e-9 * np.abs(f[:, 0]) + 1e-12))
    theta_r, f_r = _optimise(starts if needs_all else starts[:1], counts[pilot:], cN, cD, logL, delta, exponent_max)
    rest = theta_r[np.arange(R - pilot), np.argmin(f_r, axis=1)]
    return np.concatenate([best, rest])


def weighted_refits(fit, counts, n_starts: int = 3) -> np.ndarray:
    """(R, 5): (E, A, B, alpha, beta) of `fit` (a fitted `ChinchillaFit`) refitted with each row of `counts` as the
    weights of its runs (a bootstrap replicate; 1 - the identity: each run left out in turn), from the `n_starts`
    best basins of the full-data fit, batched (`_replicate_optima`). NaN where a refit failed."""
    logN, logD, logL = np.log(fit.N_), np.log(fit.D_), np.log(fit.loss_)
    mN, mD = fit.centre_
    cN, cD = logN - mN, logD - mD
    order = np.argsort(objective(fit.basins_, cN, cD, logL, delta=fit.delta))
    starts = fit.basins_[order[:n_starts]]
    best = _replicate_optima(starts, np.asarray(counts, float), cN, cD, logL, fit.delta, fit.exponent_max)
    a = best[:, 0] + best[:, 3] * mN
    b = best[:, 1] + best[:, 4] * mD
    return np.column_stack([np.exp(best[:, 2]), np.exp(a), np.exp(b), best[:, 3], best[:, 4]])


def bootstrap(fit, n_resamples: int = 1000, seed: int = 0, confidence: float = DEFAULT_CONFIDENCE, n_starts: int = 3):
    """Refit `fit` (a fitted `ChinchillaFit`) on `n_resamples` resamples of its runs.

    Args:
        fit: a fitted `ChinchillaFit`; its data and options are reused.
        n_resamples: number of bootstrap replicates (Epoch's replication uses 4000).
        seed: seed of the resampling; the same seed gives the same intervals.
        confidence: central probability of the percentile intervals, in (0, 1).
        n_starts: basins of the full-data fit each replicate starts from (the best is kept).

    Returns:
        A `BootstrapResult`.
    """
    fit._require_fitted()
    options = validate(BOOTSTRAP_CONSTRAINTS, n_resamples=n_resamples, confidence=confidence, n_starts=n_starts)
    n_resamples, confidence, n_starts = options["n_resamples"], options["confidence"], options["n_starts"]
    rng = np.random.default_rng(seed)
    counts = resample_counts(rng, fit.n_runs_, n_resamples, getattr(fit, "groups_", None))
    best = weighted_refits(fit, counts, n_starts)
    ok = np.all(np.isfinite(best), axis=1)
    best = best[ok]
    samples = dict(zip(("E", "A", "B", "alpha", "beta"), best.T))
    return BootstrapResult(samples=samples, confidence=confidence, seed=seed, n_failed=int((~ok).sum()))
