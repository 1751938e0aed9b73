"""From a fitted law to a decision: the law with its intervals, and the compute-optimal run for a budget.

`law_summary` gives the law with bootstrap intervals on its parameters and the isoFLOP cross-check (a
`results.LawSummary`); `next_run` the compute-optimal run for a budget C (Hoffmann et al. 2022, Eq. 4) with
intervals on N, D and the predicted loss (a `results.NextRun`). `summarize_fit` and `recommend` give the same as the
command line's JSON (their `to_dict()`, the recommendation with its sentence). `figure_data` adds the curves the
figures draw. The fit is any law form (`lightning_scaling.law.form`): everything is asked of it through that
interface. The words are in `planner.report`.
"""

from __future__ import annotations

import math

import numpy as np

from lightning_scaling.law.form import Intervals
from lightning_scaling.law.isoflop import are_budgets, group_by_flops, isoflop_analysis
from lightning_scaling.planner.report import recommendation_sentence
from lightning_scaling.planner.results import Bootstrap, LawSummary, NextRun
from lightning_scaling.schedules.flops import FLOPS_PER_PARAM_TOKEN


def optimal_params_exponent(fit, flops: float) -> float:
    """a in N_opt ~ C^a at `flops`, from the law form's own compute-optimal sizes at C and 2C (NaN when the law
    gives no finite positive size, as a degenerate fit may)."""
    with np.errstate(all="ignore"):
        low, high = fit.compute_optimal(flops).params, fit.compute_optimal(2.0 * flops).params
    if not (0 < low < math.inf and 0 < high < math.inf):
        return math.nan
    return math.log(high / low) / math.log(2.0)


def law_summary(fit, bootstrap: Intervals | None = None, flops=None, points=None) -> LawSummary:
    """The fitted law: the form's own `to_dict` (law, parameters, objective, n_runs, params_column, boundary) and
    the isoFLOP cross-check (Approach 2) with the exponent the law implies.

    With `bootstrap`, each parameter's percentile interval and the bootstrap's confidence, replicates and seed.
    `points` (N, D, loss) are the runs the isoFLOP cross-check groups (default the fit's own points; a whole-curve
    fit passes the final losses), `flops` their compute.
    """
    iso = isoflop_analysis(*(points if points is not None else (fit.N_, fit.D_, fit.loss_)), flops)
    isoflop = None
    if iso is not None:
        reference = float(np.exp(np.mean(np.log([g.flops for g in iso.groups]))))
        isoflop = {**iso.to_dict(), "law_exponent": optimal_params_exponent(fit, reference)}
    if bootstrap is None:
        return LawSummary(law=fit.to_dict(), isoflop=isoflop)
    return LawSummary(law=fit.to_dict(), isoflop=isoflop, parameter_intervals=bootstrap.parameter_intervals(),
                      bootstrap=Bootstrap(bootstrap.confidence, bootstrap.n_resamples, bootstrap.seed))


def next_run(fit, flops: float, bootstrap: Intervals | None = None) -> NextRun:
    """The compute-optimal run for a budget of `flops` FLOPs (C = 6 N D); with `bootstrap`, the percentile
    intervals of N, D and the loss (the budget is given, so its bounds equal it)."""
    allocation = fit.compute_optimal(flops)
    values = allocation.to_dict()
    intervals = {}
    if bootstrap is not None:
        found = bootstrap.allocation_intervals(flops)
        intervals = {key: tuple(found[key]) for key in ("params", "tokens", "loss")}
        intervals["flops"] = (values["flops"], values["flops"])
    return NextRun(**values, intervals=intervals)


def summarize_fit(fit, bootstrap: Intervals | None = None, flops=None, points=None) -> dict:
    """`law_summary(...).to_dict()`: the command line's `fit` JSON."""
    return law_summary(fit, bootstrap, flops, points).to_dict()


def recommend(fit, flops: float, bootstrap: Intervals | None = None, run_flops=None, points=None) -> dict:
    """The law (`summarize_fit`) with the compute-optimal next run for a budget of `flops` FLOPs: ``params``,
    ``tokens``, ``flops``, ``loss`` and ``tokens_per_param``; with `bootstrap`, ``<key>_low`` / ``<key>_high`` of
    each, and a one-line ``sentence`` saying what to run next."""
    out = {**summarize_fit(fit, bootstrap, run_flops, points), **next_run(fit, flops, bootstrap).to_dict()}
    out["sentence"] = recommendation_sentence(out)
    return out


FIGURE_GROUPS = 12  # isoFLOP curves drawn at most: beyond that many budgets, the runs are binned by compute


def figure_data(fit, run_flops, budget: float, points: int = 100) -> dict:
    """The curves the figures draw, from the law form itself: the compute-optimal frontier L_opt(C) from half the
    smallest run's compute to three times past the budget, and the law along each isoFLOP group's curve C = 6ND
    with the group's optimum (runs at more than `FIGURE_GROUPS` budgets, or spread over compute rather than at
    budgets, are split into that many equal-count compute bins, each drawn at its mean compute, so that the figure
    and recommendation.json stay small)."""
    C = np.asarray(run_flops, float)
    grid = np.geomspace(C.min() / 2, max(budget, C.max()) * 3, points)
    with np.errstate(all="ignore"):  # a degenerate fit's allocation can be 0 or infinite: drawn where finite
        frontier = [fit.compute_optimal(c) for c in grid]
    groups = []
    N = np.asarray(fit.N_, float)
    budgets = group_by_flops(C)
    if len(budgets) > FIGURE_GROUPS or not are_budgets(C, budgets):  # runs at many budgets (a large store), or
        # spread over compute: curves for equal-count compute bins
        budgets = [np.sort(b) for b in np.array_split(np.argsort(C, kind="stable"), FIGURE_GROUPS)]
    for idx in budgets:
        c = float(np.exp(np.log(C[idx]).mean()))
        n = np.geomspace(N[idx].min() / 3, N[idx].max() * 3, points // 2)
        with np.errstate(all="ignore"):
            opt = fit.compute_optimal(c)
        law = np.asarray(fit.predict(n, c / (FLOPS_PER_PARAM_TOKEN * n)))
        groups.append({"flops": c, "members": [int(i) for i in idx], "params": n.tolist(), "loss": law.tolist(),
                       "params_opt": opt.params, "loss_opt": opt.loss})
    return {"frontier": {"flops": grid.tolist(), "loss": [a.loss for a in frontier]}, "isoflop": groups}

