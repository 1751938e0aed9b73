"""How sure the next run's numbers are: the prediction interval on its loss, calibrated by forward chaining over
compute (`evaluation.intervals`) when the runs allow it, else the bootstrap of the mean law widened by the runs'
scatter (said, with its meaning, in ``intervals``); the interval on N_opt with and without the runs' checkpoints
(what the whole-curve fit buys); and what each candidate law form would have recommended.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lightning_scaling.errors import LightningScalingError
from lightning_scaling.evaluation.intervals import MIN_HELD_OUT, calibrate, scatter, widen_by_scatter
from lightning_scaling.law.form import fit_runs, quietly
from lightning_scaling.planner.inputs import Runs
from lightning_scaling.planner.options import FitOptions
from lightning_scaling.planner.results import NextRun

INTERVAL_MEANING = {
    "calibrated": ("loss_low..loss_high: where a run trained at this N and D is expected to land, with probability "
                   "{pct}%. Calibrated on these runs by forward chaining over compute: fits on the smaller runs "
                   "predicted the larger ones, and the interval is scaled to cover {pct}% of those held-out errors, "
                   "growing with the distance extrapolated and with how far the law still moves. N and D: "
                   "bootstrap percentiles of the compute-optimal size, widened to where the last fits put it."),
    "scatter": ("loss_low..loss_high: the bootstrap interval of the mean law widened by the runs' scatter about it "
                "({pct}%, normal); NOT calibrated for extrapolation: too few runs above the smallest compute to "
                "measure the extrapolation error (fewer than {held} held out). Treat it as a lower bound on the "
                "uncertainty. N and D: bootstrap percentiles."),
}


def fit_kwargs(runs: Runs) -> dict:
    """The keyword arguments of every fit of the law on all the runs (one set, so that `law.form.shared_fits`
    shares the fit among the recommendation, the other forms' predictions and the plan; fits on a part of the runs
    take the column alone)."""
    return {"params_column": runs.params_column, "labels": runs.labels or None}


def prediction_intervals(run: NextRun, fit, factory, runs: Runs, confidence: float, budget: float
                         ) -> tuple[NextRun, dict]:
    """The next run with ``loss`` (and, calibrated, ``params``/``tokens``) intervals from the calibrated prediction
    intervals (`evaluation.intervals`), or, with too few runs to calibrate, from the bootstrap widened by the runs'
    scatter; and what was done, with the words saying what the interval means."""
    pct = int(round(100 * confidence))
    N, D, L = runs.N, runs.D, runs.L
    try:
        cal = calibrate(factory, N, D, L, confidence, fit_kwargs={"params_column": runs.params_column},
                        extra=runs.extra, full_fit=fit)
    except LightningScalingError:
        cal = None
    intervals = dict(run.intervals)
    if cal is not None and cal.calibrated:
        low, high = cal.interval(run.params, run.tokens)
        intervals["loss"] = (float(low), float(high))
        with np.errstate(all="ignore"):
            spread = cal.allocation_spread(budget)
        for key in ("params", "tokens"):
            lo, hi = spread[key]
            old = intervals.get(key, (lo, hi))
            intervals[key] = (min(old[0], lo), max(old[1], hi))
        how = {**cal.to_dict(), "loss": "calibrated", "meaning": INTERVAL_MEANING["calibrated"].format(pct=pct)}
        return replace(run, intervals=intervals), how
    sigma = scatter(fit, N, D, L, runs.extra)
    lo, hi = intervals.get("loss", (run.loss, run.loss))
    low, high = widen_by_scatter(lo, hi, sigma, confidence)
    intervals["loss"] = (float(low), float(high))
    how = {"method": "bootstrap of the mean law and the runs' scatter", "calibrated": False, "confidence": confidence,
           "sigma": sigma, "held_out": 0 if cal is None else cal.n_held_out, "loss": "bootstrap+scatter",
           "meaning": INTERVAL_MEANING["scatter"].format(pct=pct, held=MIN_HELD_OUT)}
    return replace(run, intervals=intervals), how


def params_intervals(runs: Runs, factory, points, whole: bool, boot, options: FitOptions, budget: float) -> dict:
    """The bootstrap interval on N_opt at the budget of the fit made (`boot`) and of the other one (final-only or
    whole-curve), to show what the checkpoints buy."""
    if not options.n_bootstrap:
        return {}
    column = {"params_column": runs.params_column}
    N, D, L = runs.N, runs.D, runs.L
    try:
        if whole:
            other = fit_runs(factory, N, D, L, extra=runs.extra, quiet=True, **fit_kwargs(runs))
        else:
            other = quietly(factory()).fit(np.concatenate([N, points.N]), np.concatenate([D, points.D]),
                                           np.concatenate([L, points.loss]), **column)
            other.groups_ = np.concatenate([np.arange(len(N)), points.run])
        other_boot = other.bootstrap(options.n_bootstrap, seed=options.seed, confidence=options.confidence)
        theirs = [float(v) for v in other_boot.allocation_intervals(budget)["params"]]
        ours = [float(v) for v in boot.allocation_intervals(budget)["params"]]
    except LightningScalingError:
        return {}
    final, curve = (theirs, ours) if whole else (ours, theirs)
    ratio = lambda iv: iv[1] / iv[0] if iv[0] > 0 else float("inf")
    return {"final_only": final, "whole_curve": curve, "final_only_ratio": ratio(final),
            "whole_curve_ratio": ratio(curve), "confidence": options.confidence, "flops": budget}


def form_predictions(forms: dict, chosen: str, chosen_fit, run: NextRun, runs: Runs) -> dict:
    """Each form's own compute-optimal run at the budget, and its loss at the recommended run."""
    predictions = {}
    for name, factory in forms.items():
        try:
            fit = chosen_fit if name == chosen else fit_runs(factory, runs.N, runs.D, runs.L, extra=runs.extra,
                                                             quiet=True, **fit_kwargs(runs))
            allocation = fit.compute_optimal(run.flops)
        except LightningScalingError as err:
            predictions[name] = {"error": str(err)}
            continue
        predictions[name] = {"fitted": fit.to_dict().get("fitted"), "params": allocation.params,
                             "tokens": allocation.tokens, "loss": allocation.loss,
                             "loss_at_recommended": float(fit.predict(run.params, run.tokens))}
    return predictions
