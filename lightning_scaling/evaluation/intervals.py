"""Prediction intervals for a new run, calibrated for extrapolation from the runs themselves.

A bootstrap of the runs (`law.bootstrap`) says how well the *mean* law is pinned by the data; it leaves out the
scatter of one run about the law and, above all, the error of extrapolating to more compute than any run used, so
its intervals cover far fewer than their nominal share of larger runs. This module measures that error on the
user's own runs instead, the way it will be incurred: forward chaining over compute (rolling-origin evaluation)
with split-conformal quantiles.

1. Order the runs by compute C = 6ND and fit the law form on nested prefixes (`evaluation.folds.prefix_folds`): the
   smallest 40%, 50%, ..., 90% of the runs, and all of them.
2. Each prefix fit after the first predicts every run above its largest compute. A held-out run gives its log residual
   r = log L - log L_hat, its extrapolation distance x = log(C / C_max of the prefix) (0 for a run inside the
   compute range), and the drift d: the largest |log L_hat - log L_hat'| between this fit's prediction there and
   those of the previous two prefix fits, i.e. how far the law's prediction at that point moved as runs were added.
3. Two scales, each with its parameters fitted by least squares to the held-out residuals:

       s_x = sqrt(sigma^2 + kappa^2 x^2)               run-to-run scatter, plus an error growing with the distance
       s_d = sqrt(sigma^2 + d^2 + kappa_d^2 x^2)       ... and the instability of the law at that point

   sigma is the scatter of the runs about the full fit (a robust estimate: 1.4826 x the median absolute
   deviation of its log residuals).
4. For each scale, the conformal quantile q of |r| / s over the held-out runs at the confidence asked
   (`evaluation.folds.conformal_quantile`: the ceil((n + 1) p)-th smallest of n) makes q s the half-width in log
   loss. The interval of a new run is the wider of the two, L_hat exp(-h) to L_hat exp(h): either diagnostic may be
   the one that sees the error coming (the distance, for a law that drifts slowly and evenly; the drift, for a law
   whose exponents are still moving where the new run lies).

For a new run, x is measured from the largest compute of all runs and d against the two largest prefix fits.
With fewer than `MIN_HELD_OUT` held-out residuals the calibration is refused (`calibrated` is False) and the caller
says so. The nested fits are made quietly (`law.form.fit_runs(quiet=True)`): how many of them put a parameter on
its search box is counted in `bound_hits`. They also give the spread of the compute-optimal allocation at a budget
(`allocation_spread`), which widens the bootstrap's N_opt and D_opt intervals by how far they still move as compute
grows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lightning_scaling.errors import LightningScalingError
from lightning_scaling.evaluation.folds import DRIFT_REFERENCE, SHARES, Fold, conformal_quantile, prefix_folds
from lightning_scaling.law.form import DEFAULT_CONFIDENCE, fit_runs, predict_runs
from lightning_scaling.options import check_confidence
from lightning_scaling.schedules.flops import training_compute

PREFIXES = (DRIFT_REFERENCE, *SHARES)  # the nested prefixes fitted before the fit on all runs (`evaluation.folds`)
DRIFT_FITS = 2  # the drift compares a fit with this many previous prefix fits
MIN_HELD_OUT = 8  # fewer held-out residuals cannot place a 10th-90th percentile interval
MAD_SCALE = 1.4826  # the median absolute deviation of a normal distribution, in standard deviations
SIGMA_FLOOR = 1e-12


def scatter(fit, N, D, L, extra=None) -> float:
    """The runs' scatter about a fitted law: 1.4826 x the median absolute deviation of the log residuals (a robust
    standard deviation)."""
    residuals = np.log(np.asarray(L, float)) - np.log(predict_runs(fit, N, D, extra=extra))
    return MAD_SCALE * float(np.median(np.abs(residuals - np.median(residuals))))


def widen_by_scatter(low, high, sigma: float, confidence: float):
    """(low, high) of the mean law widened by a normal scatter of `sigma` (log loss) at `confidence`: the fallback
    interval when the runs are too few to calibrate the extrapolation error."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return np.asarray(low, float) * math.exp(-z * sigma), np.asarray(high, float) * math.exp(z * sigma)


def _kappa2(r2, x, base):
    """kappa^2 of r^2 ~ base + kappa^2 x^2 by least squares over the runs with x > 0 (0 when none, or negative)."""
    w = x * x
    denominator = float(np.sum(w * w))
    return max(float(np.sum(w * (r2 - base))) / denominator, 0.0) if denominator > 0 else 0.0


@dataclass
class ExtrapolationIntervals:
    """Calibrated prediction intervals (see the module docstring); build with `calibrate`.

    Attributes:
        sigma: scatter of the runs about the full fit (log loss).
        kappa, kappa_d: growth of the error with the extrapolation distance, in the two scales.
        q_x, q_d: conformal quantiles of the normalised held-out residuals at `confidence`.
        n_held_out: held-out residuals the quantiles come from.
        bound_hits: the nested fits (the fit on all runs included) with a parameter on its search box (a
            ``boundary_`` message): the calibration rests on them all the same.
    """

    confidence: float
    sigma: float
    kappa: float
    kappa_d: float
    q_x: float
    q_d: float
    n_held_out: int
    log_c_max: float
    fits: list = field(repr=False, default_factory=list)  # the nested prefix fits, smallest first (last: all runs)
    bound_hits: int = 0

    @property
    def calibrated(self) -> bool:
        return self.n_held_out >= MIN_HELD_OUT and math.isfinite(self.q_x) and math.isfinite(self.q_d)

    def half_width(self, N, D, extra=None):
        """h at each run (log loss): the larger of the two calibrated half-widths."""
        N, D = np.asarray(N, float), np.asarray(D, float)
        x = np.maximum(np.log(training_compute(N, D)) - self.log_c_max, 0.0)
        d = _drift(self.fits, len(self.fits) - 1, N, D, extra=extra)
        s_x = np.sqrt(self.sigma**2 + self.kappa**2 * x * x)
        s_d = np.sqrt(self.sigma**2 + d * d + self.kappa_d**2 * x * x)
        return np.maximum(self.q_x * s_x, self.q_d * s_d)

    def interval(self, N, D, extra=None):
        """(low, high) of the loss of runs at (N, D): arrays broadcast like N and D; `extra` as for `calibrate`
        (absent: fresh runs)."""
        center = predict_runs(self.fits[-1], N, D, extra=extra)
        h = self.half_width(N, D, extra)
        return center * np.exp(-h), center * np.exp(h)

    def allocation_spread(self, flops: float) -> dict[str, tuple[float, float]]:
        """min and max of the compute-optimal params, tokens and loss at `flops` over the last prefix fits."""
        allocations = [fit.compute_optimal(flops) for fit in self.fits[-(DRIFT_FITS + 1):]]
        return {key: (min(getattr(a, key) for a in allocations), max(getattr(a, key) for a in allocations))
                for key in ("params", "tokens", "loss")}

    def to_dict(self) -> dict:
        return {"method": "forward chaining over compute, split-conformal", "confidence": self.confidence,
                "calibrated": self.calibrated, "sigma": self.sigma, "kappa": self.kappa, "kappa_drift": self.kappa_d,
                "quantile_distance": self.q_x, "quantile_drift": self.q_d, "held_out": self.n_held_out,
                "prefix_fits": len(self.fits), "bound_hits": self.bound_hits}


def _drift(fits, k, N, D, idx=None, extra=None):
    """max |log L_hat_k - log L_hat_j| over the DRIFT_FITS fits before k (0 when k has none)."""
    here = np.log(predict_runs(fits[k], N, D, idx, extra))
    earlier = fits[max(0, k - DRIFT_FITS):k]
    if not earlier:
        return np.zeros_like(here)
    return np.max([np.abs(here - np.log(predict_runs(f, N, D, idx, extra))) for f in earlier], axis=0)


def nested_fits(factory: Callable, N, D, L, fit_kwargs=None, extra=None, full_fit=None) -> tuple[list[Fold], list]:
    """The law form fitted, quietly, on the nested prefixes of the runs ordered by compute (`PREFIXES`) and on all
    of them (`full_fit` when given, instead of fitting it again).

    Returns:
        (folds, fits): the prefix folds whose fit succeeded (each predicts every run above its prefix), smallest
        first, and their fits followed by the fit on all runs when that one succeeds.
    """
    N, D, L = (np.asarray(x, float) for x in (N, D, L))
    folds, fits = [], []
    for fold in prefix_folds(N, D, PREFIXES, step=None, min_train=1):
        try:
            fits.append(fit_runs(factory, N, D, L, fold.train, extra, quiet=True, **(fit_kwargs or {})))
            folds.append(fold)
        except LightningScalingError:  # too few runs in this prefix for the form: start from a larger one
            continue
    try:
        fits.append(full_fit if full_fit is not None
                    else fit_runs(factory, N, D, L, None, extra, quiet=True, **(fit_kwargs or {})))
    except LightningScalingError:
        pass  # the caller refuses: no fit on all runs
    return folds, fits


def _held_out(fits, folds, N, D, L, extra):
    """(r, x, d) of the runs each prefix fit after the first predicts (module docstring, step 2), concatenated."""
    logC = np.log(training_compute(N, D))
    r, x, d = [], [], []
    for k in range(1, len(folds)):  # the first prefix fit has no earlier fit to drift from
        held = folds[k].test
        r.append(np.log(L[held]) - np.log(predict_runs(fits[k], N, D, held, extra)))
        x.append(np.maximum(logC[held] - math.log(folds[k].train_max_flops), 0.0))
        d.append(_drift(fits, k, N, D, held, extra))
    if not r:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return tuple(np.concatenate(v) for v in (r, x, d))


def calibrate(factory: Callable, N, D, L, confidence: float = DEFAULT_CONFIDENCE, *, fit_kwargs=None, extra=None,
              full_fit=None) -> ExtrapolationIntervals:
    """Calibrate prediction intervals for the law form built by `factory` on these runs (module docstring);
    `fit_kwargs` go to each fit; `extra` holds the per-run data a form declares in ``extra_fields`` (unique tokens);
    `full_fit`, the form already fitted on all these runs, is used as the last prefix fit instead of fitting it
    again."""
    check_confidence(confidence)
    N, D, L = (np.asarray(x, float) for x in (N, D, L))
    folds, fits = nested_fits(factory, N, D, L, fit_kwargs, extra, full_fit)
    if len(fits) == len(folds):
        raise LightningScalingError("the law form could not be fitted to all the runs; no intervals")
    # (floored, so that runs the law fits exactly still give finite normalised scores)
    sigma = max(scatter(fits[-1], N, D, L, extra), SIGMA_FLOOR)
    r, x, d = _held_out(fits, folds, N, D, L, extra)
    base_d = sigma**2 + d * d
    k2 = _kappa2(r * r, x, sigma**2)
    k2d = _kappa2(r * r, x, base_d)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_x = np.abs(r) / np.sqrt(sigma**2 + k2 * x * x)
        z_d = np.abs(r) / np.sqrt(base_d + k2d * x * x)
    return ExtrapolationIntervals(
        confidence=confidence, sigma=sigma, kappa=math.sqrt(k2), kappa_d=math.sqrt(k2d),
        q_x=conformal_quantile(z_x, confidence), q_d=conformal_quantile(z_d, confidence), n_held_out=len(r),
        log_c_max=float(np.log(training_compute(N, D)).max()), fits=fits,
        bound_hits=sum(bool(getattr(fit, "boundary_", None)) for fit in fits),
    )
