"""Plan the sweep: from a compute budget to the next stage of small runs, chosen to pin N_opt at a target compute.

`plan_stage(target_flops, budget, N, D, L)` answers: which runs to train next, with how much of the budget, so that
the interval on the compute-optimal size N_opt at `target_flops` (the run the user finally wants to size) shrinks
most. Each run is one member of an isoFLOP group (Hoffmann et al. 2022, Approach 2: sizes at one compute, their
tokens spending it), whose sizes bracket the predicted optimum of its budget.

- **No runs yet**: the prior is Chinchilla's published law (Hoffmann et al. 2022, Eq. 10; about 20 tokens per
  parameter at the optimum). Only its compute-optimal sizes are used, which do not depend on the loss's units, so
  it carries over to another model family up to the family's own tokens per parameter, which the first stage is
  there to measure: it brackets wide, `FIRST_GROUPS` groups of `GROUP_SIZE` sizes from 1/`FIRST_SPREAD` to
  `FIRST_SPREAD` times the prior's optimum, at budgets `FIRST_RATIO` apart, spending `FIRST_SHARE` of the budget.
- **With runs** (a fit of the law exists): sequential c-optimal design (`planner.design`) at the current estimate and
  the runs' scatter, by rollout over candidate isoFLOP groups (`planner.rollout`). The expected shrink of the stage
  is reported and applied to the current bootstrap interval for the interval to expect after it.
- **Too few runs to fit** (some runs, no fit): the first stage's design around the prior again, from 3x the largest
  compute so far.

The budget counts every run so far (C = 6ND): `budget_left` = budget - spent. When no candidate fits in what is
left, the plan says so: the sweep is done, train the target. `stage_plan` answers with a `results.StagePlan`;
`plan_stage` takes arrays and keyword options and answers with its dict. The family's side (architectures, whole
steps, commands, learning rates) is `planner.family`; the whole pipeline, `planner.sweep.plan_sweep`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from lightning_scaling.errors import ConfigurationError, LightningScalingError
from lightning_scaling.evaluation.intervals import scatter
from lightning_scaling.law.allocation import optimal_allocation
from lightning_scaling.law.fit import ChinchillaFit
from lightning_scaling.law.form import fit_runs
from lightning_scaling.law.isoflop import group_by_flops
from lightning_scaling.law.synthetic import CHINCHILLA_PAPER_LAW
from lightning_scaling.planner.design import group
from lightning_scaling.planner.inputs import Runs
from lightning_scaling.planner.options import FIRST_GROUPS, FIRST_SHARE, GROUP_SIZE, StageOptions, split_options
from lightning_scaling.planner.report import stage_sentence
from lightning_scaling.planner.results import StagePlan
from lightning_scaling.planner.rollout import new_runs, next_stage
from lightning_scaling.planner.uncertainty import fit_kwargs
from lightning_scaling.schedules.flops import training_compute

PRIOR = CHINCHILLA_PAPER_LAW
PRIOR_NAME = "Chinchilla (Hoffmann et al. 2022, Eq. 10: E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)"
FIRST_SPREAD = 8.0  # the first stage brackets the prior's optimum from 1/8 to 8x: the family's optimum is unknown
FIRST_RATIO = 3.0  # ... at budgets 3x apart
RESUME_MARGIN = 1.25  # runs within this factor of the first stage's compute range are its runs (dense or sparse)


def plan_stage(target_flops: float, budget: float, N=(), D=(), L=(), *, fit=None, realize=None, **options) -> dict:
    """`stage_plan` of the runs (N, D, L) as its dict; `options` are the other `StageOptions` fields
    (``n_bootstrap``, ``seed``, ``confidence``, ``first_share``, ``first_groups``, ``group_size``)."""
    N, D, L = (np.asarray(x, float).reshape(-1) for x in (N, D, L))
    if not (len(N) == len(D) == len(L)):
        raise ConfigurationError(f"the runs' params, tokens and loss must have one length, got {len(N)}, {len(D)}, "
                                 f"{len(L)}")
    stage = StageOptions(target_flops=target_flops, budget=budget, **split_options(options, StageOptions)[0])
    return stage_plan(Runs(N=N, D=D, L=L), stage, fit=fit, realize=realize).to_dict()


def stage_plan(runs: Runs, options: StageOptions, *, fit=None, realize=None) -> StagePlan:
    """The next stage of the sweep (module docstring).

    Args:
        runs: the runs so far (dense or average non-zero parameters, tokens, final loss).
        options: the target, the budget, the first stage's shape and the bootstrap of the interval on N_opt.
        fit: the law already fitted to them (default: a `ChinchillaFit`, when they allow one).
        realize: `realize(runs) -> (runs, left out)`: the planned runs as the family can train them
            (`family.family_realizer`); candidates are scored as realized.
    """
    N, D = runs.N, runs.D
    spent = float(training_compute(N, D).sum()) if len(N) else 0.0
    first, first_dropped = _realized(first_stage(options.budget, options.first_share, 1, 0.0, options.first_groups,
                                                 options.group_size), realize)
    stage = stage_number(N, D, first)
    if fit is None and len(N):
        fit = _fit(runs)
    base = {"target_flops": options.target_flops, "budget": options.budget, "spent": spent, "n_runs": len(N)}
    if fit is None or getattr(fit, "theta_", None) is None:
        values = _from_prior(runs, options, spent, stage, (first, first_dropped), realize)
    else:
        values = _from_fit(runs, options, spent, stage, fit, realize)
    stage_flops = float(sum(r["flops"] for r in values["runs"]))
    plan = StagePlan(**base, **values, stage_flops=stage_flops, budget_left=options.budget - spent - stage_flops,
                     done=not values["runs"])
    return replace(plan, sentence=stage_sentence(plan))


def _from_prior(runs: Runs, options: StageOptions, spent: float, stage: int, first, realize) -> dict:
    """The first stage's design around the prior (or what is left of it), or a new bracket above the runs so far."""
    N, D = runs.N, runs.D
    left = options.budget - spent
    planned, dropped = [], []
    if left > 0:
        planned, dropped = first
        todo = new_runs(planned, N, D)
        if len(N) and not (todo and _inside(N, D, planned)):
            # the runs so far are not an unfinished first stage: a new bracket from 3x their largest compute
            above = float(training_compute(N, D).max())
            todo, dropped = _realized(first_stage(options.budget, options.first_share, stage, above,
                                                  options.first_groups, options.group_size), realize)
            todo = new_runs(todo, N, D)
        else:
            stage = 1  # an interrupted first stage: its remaining runs
        planned = todo
    while planned and sum(r["flops"] for r in planned) > left:  # what the budget affords, largest groups last
        planned = planned[:-1]
    prior = {"law": PRIOR_NAME, "params_opt_at_target": prior_optimum(options.target_flops),
             "used_for": "the sizes of the first stage only (its optimum at each budget)"}
    if len(N):
        prior["why"] = "the runs so far do not allow a fit of the law yet"
    return {"basis": "prior", "prior": prior, "stage": stage, "runs": tuple(planned), "left_out": tuple(dropped)}


def _from_fit(runs: Runs, options: StageOptions, spent: float, stage: int, fit, realize) -> dict:
    """The later stage chosen by rollout (`rollout.next_stage`), with N_opt at the target and its interval now and
    as expected after the stage."""
    N, D, L = runs.N, runs.D, runs.L
    left = options.budget - spent
    target = options.target_flops
    sigma = scatter(fit, N, D, L)
    planned, expected = next_stage(fit, N, D, sigma, target, left, stage, realize) if left > 0 else ([], {})
    with np.errstate(all="ignore"):
        n_opt = float(fit.compute_optimal(target).params)
    law = {"law": fit.to_dict().get("fitted"), "params_opt_at_target": n_opt}
    if options.n_bootstrap:
        boot = fit.bootstrap(options.n_bootstrap, seed=options.seed, confidence=options.confidence)
        lo, hi = boot.allocation_intervals(target)["params"]
        law.update(params_opt_low=float(lo), params_opt_high=float(hi), confidence=options.confidence)
        if expected and lo > 0 and math.isfinite(hi):
            s = expected["shrink"]
            expected["interval_now"] = [float(lo), float(hi)]
            expected["interval_expected"] = [n_opt * (lo / n_opt) ** s, n_opt * (hi / n_opt) ** s]
    return {"basis": "fit", "fit": law, "expected": expected, "stage": stage, "runs": tuple(planned)}


def _realized(runs: list[dict], realize) -> tuple[list, list]:
    return realize(runs) if realize is not None else (runs, [])


def _fit(runs: Runs):
    """Chinchilla's law on the runs so far (the design's Jacobian is its own), or None when it cannot be fitted or
    is degenerate; inside `law.form.shared_fits`, the fit the recommendation made of the same runs."""
    try:
        fit = fit_runs(ChinchillaFit, runs.N, runs.D, runs.L, quiet=True, **fit_kwargs(runs))
    except LightningScalingError:
        return None
    degenerate = [d for d in getattr(fit, "degenerate_", []) or [] if d.get("refuses", True)]
    return None if degenerate else fit


def prior_optimum(flops) -> float:
    """The prior's compute-optimal N at `flops`."""
    p = PRIOR
    return float(optimal_allocation(p.E, p.A, p.B, p.alpha, p.beta, flops)[0])


def first_stage(budget: float, share: float = FIRST_SHARE, stage: int = 1, above: float = 0.0,
                groups: int = FIRST_GROUPS, sizes: int = GROUP_SIZE) -> list[dict]:
    """The wide bracket around the prior's optimum (module docstring): `groups` isoFLOP groups of `sizes` sizes in
    `share` of the budget; with `above` (the largest compute so far, when the runs so far do not allow a fit yet),
    its smallest group at 3x that compute."""
    weights = FIRST_RATIO ** np.arange(groups)
    c0 = share * budget / (sizes * weights.sum())
    if above > 0:
        c0 = FIRST_RATIO * above
    runs = []
    for w in weights:
        c = float(c0 * w)
        runs += group(c, prior_optimum(c), FIRST_SPREAD, sizes, f"stage{stage}-C{c:.2g}", stage)
    return runs


def fixed_design(budget: float, groups: int = 3, sizes: int = 5, ratio: float = 4.0, spread: float = FIRST_SPREAD
                 ) -> list[dict]:
    """The design without a plan: `groups` isoFLOP groups of `sizes` geometric sizes around the prior's optimum,
    budgets `ratio` apart, spending the whole budget (the baseline of `benchmarks/planning.py`)."""
    weights = ratio ** np.arange(groups)
    c0 = budget / (sizes * weights.sum())
    runs = []
    for w in weights:
        c = float(c0 * w)
        runs += group(c, prior_optimum(c), spread, sizes, f"fixed-C{c:.2g}", 1)
    return runs


def _inside(N, D, runs: list[dict]) -> bool:
    """Whether every run so far lies within the compute range of the first stage's `runs` (`RESUME_MARGIN`)."""
    if not runs:
        return False
    flops = training_compute(N, D)
    lo = min(r["flops"] for r in runs) / RESUME_MARGIN
    hi = max(r["flops"] for r in runs) * RESUME_MARGIN
    return bool(np.all((flops >= lo) & (flops <= hi)))


def stage_number(N, D, first: list[dict] | None = None) -> int:
    """The next stage's number from the runs so far: 1 without runs, 2 after the first stage, then one more for
    each further compute level (a later stage is one group; levels as `law.isoflop.group_by_flops` tells them
    apart). The first stage spans as many levels as its design `first` has groups (`FIRST_GROUPS` without one)."""
    if not len(N):
        return 1
    first_levels = len({r["group"] for r in first}) if first else FIRST_GROUPS
    return 2 + max(0, len(group_by_flops(training_compute(N, D))) - first_levels)
