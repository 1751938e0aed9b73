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
  the runs' scatter, by rollout (Bertsekas' rollout policy: one step of lookahead over a base policy). The
  candidate groups are a budget of `BUDGET_STEPS` times the largest compute so far, `GROUP_COUNTS` sizes spanning
  1/s..s of the fitted optimum there, s in `SPREADS`, and groups spending what is left of the budget. The base policy
  spends the budget group by group, each time the group whose fall of the standard deviation of log N_opt at the
  target per FLOP is largest; alone it favours cheap groups, and the linearised shrink undervalues the lever arm of
  larger compute. Each candidate is therefore scored by the standard deviation predicted once it is trained *and*
  the rest of the budget is spent by the base policy, and the stage takes the candidate with the least (up to
  `STAGE_GROUPS` groups). The expected shrink of the stage is reported and applied to the current bootstrap
  interval for the interval to expect after it.
- **Too few runs to fit** (some runs, no fit): the first stage's design around the prior again, from 3x the largest
  compute so far.

The budget counts every run so far (C = 6ND): `budget_left` = budget - spent. When no candidate fits in what is
left, the plan says so: the sweep is done, train the target.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from lightning_scaling.errors import ConfigurationError, LightningScalingError
from lightning_scaling.law.allocation import optimal_allocation
from lightning_scaling.law.synthetic import CHINCHILLA_PAPER_LAW
from lightning_scaling.options import check_int, check_positive
from lightning_scaling.planner.design import expected_shrink
from lightning_scaling.schedules.flops import FLOPS_PER_PARAM_TOKEN, training_compute

PRIOR = CHINCHILLA_PAPER_LAW
PRIOR_NAME = "Chinchilla (Hoffmann et al. 2022, Eq. 10: E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)"
GROUP_SIZE = 5
FIRST_GROUPS = 3
FIRST_SPREAD = 8.0  # the first stage brackets the prior's optimum from 1/8 to 8x: the family's optimum is unknown
FIRST_RATIO = 3.0  # ... at budgets 3x apart
FIRST_SHARE = 0.1  # ... and spends a tenth of the budget (a quarter left less for the stages the fit chooses:
#                    median N_opt error 7.7% against 5.0% on Chinchilla's law, `benchmarks/planning.py`)
BUDGET_STEPS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # later groups: these multiples of the largest compute so far
SPREADS = (2.0, 4.0)  # ... sizes from 1/s to s times the fitted optimum at that budget
GROUP_COUNTS = (3, 5)
STAGE_GROUPS = 1  # a later stage is one isoFLOP group: its runs train side by side, then the plan is refitted
ROLLOUT_GROUPS = 8  # the rollout that ranks a stage's group spends the rest of the budget in at most this many
MIN_GROUP = 3  # a group has at least three new sizes (the parabola of Approach 2)
SAME_RUN = 0.02  # runs within 2% in both N and D count as the same run
MIN_SIGMA = 0.002  # the runs' scatter in log loss assumed at least this (an exact fit would promise everything)


def _check(target_flops, budget, N, D, L):
    check_positive(target_flops, "target_flops")
    check_positive(budget, "budget")
    N, D, L = (np.asarray(x, float).reshape(-1) for x in (N, D, L))
    if not (len(N) == len(D) == len(L)):
        raise ConfigurationError(f"the runs' params, tokens and loss must have one length, got {len(N)}, {len(D)}, "
                                 f"{len(L)}")
    return N, D, L


def group(flops: float, center: float, spread: float, count: int, name: str, stage: int) -> list[dict]:
    """`count` runs at compute `flops`, sizes geometric from center/spread to center*spread."""
    sizes = center * np.geomspace(1.0 / spread, spread, count) if count > 1 else np.array([center])
    return [{"params": float(n), "tokens": float(flops / (FLOPS_PER_PARAM_TOKEN * n)), "flops": float(flops),
             "group": name, "stage": stage} for n in sizes]


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
    for i, w in enumerate(weights):
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
    for i, w in enumerate(weights):
        c = float(c0 * w)
        runs += group(c, prior_optimum(c), spread, sizes, f"fixed-C{c:.2g}", 1)
    return runs


def candidates(fit, largest: float, target_flops: float, stage: int, left: float = math.inf,
               smallest: float = 0.0) -> list[list[dict]]:
    """The groups a later stage chooses from (module docstring), and groups that spend what is left of the
    budget (`left`) at the largest compute it affords, when that is not below the smallest compute so far."""
    out = []
    budgets = [m * largest for m in BUDGET_STEPS]
    if math.isfinite(left):
        budgets += [left / k for k in GROUP_COUNTS if left / k >= smallest]
    for c in budgets:
        if c > target_flops:
            continue
        with np.errstate(all="ignore"):
            center = float(fit.compute_optimal(c).params)
        if not (0 < center < math.inf):
            continue
        for s in SPREADS:
            for k in GROUP_COUNTS:
                out.append(group(c, center, s, k, f"stage{stage}-C{c:.2g}", stage))
    return out


def _new_runs(runs: list[dict], N, D) -> list[dict]:
    """`runs` without those within `SAME_RUN` of a run so far or of an earlier one of the list (in N and in D):
    a replicate tells the law less than a new point."""
    have = list(zip(np.log(N), np.log(D)))
    out = []
    for r in runs:
        point = (math.log(r["params"]), math.log(r["tokens"]))
        if any(abs(point[0] - a) < SAME_RUN and abs(point[1] - b) < SAME_RUN for a, b in have):
            continue
        have.append(point)
        out.append(r)
    return out


def _affordable(fit, N, D, target_flops: float, stage: int, left: float, smallest: float, realize=None):
    """(runs, cost) of every candidate group after the runs (N, D) (`candidates`, as the family realizes them
    with `realize`), new and within the budget `left`."""
    out = []
    for runs in candidates(fit, float(training_compute(N, D).max()), target_flops, stage, left, smallest):
        if realize is not None:
            runs = realize(runs)[0]
        runs = _new_runs(runs, N, D)
        cost = sum(r["flops"] for r in runs)
        if len(runs) >= MIN_GROUP and cost <= left:
            out.append((runs, cost))
    return out


def _with(N, D, runs):
    return (np.concatenate([N, [r["params"] for r in runs]]), np.concatenate([D, [r["tokens"] for r in runs]]))


def _rollout(theta, fit, N, D, sigma: float, target_flops: float, left: float, stage: int, smallest: float):
    """The sd of log N_opt at the target once `left` is spent after the runs (N, D) by the per-FLOP rule: group
    after group, the one whose fall of the log sd per FLOP is largest (at most `ROLLOUT_GROUPS` groups; candidates
    as planned, not realized: the rollout only ranks the first group)."""
    sd = None
    for _ in range(ROLLOUT_GROUPS):
        best = None
        for runs, cost in _affordable(fit, N, D, target_flops, stage, left, smallest):
            sd0, sd1, _ = expected_shrink(theta, N, D, *_arrays(runs), target_flops, sigma)
            if not (sd0 > 0 and math.isfinite(sd1)):
                continue
            score = (math.log(sd0) - math.log(max(sd1, 1e-300))) / cost
            if best is None or score > best[0]:
                best = (score, runs, cost, sd1)
        if best is None:
            break
        _, runs, cost, sd = best
        N, D = _with(N, D, runs)
        left -= cost
    return sd


def _arrays(runs):
    return np.array([r["params"] for r in runs]), np.array([r["tokens"] for r in runs])


def next_stage(fit, N, D, sigma: float, target_flops: float, budget_left: float, stage: int,
               realize=None) -> tuple[list, dict]:
    """The later stage's runs and the expected shrink of log N_opt's sd at the target (module docstring): the
    candidate group after which, the rest of the budget spent by the per-FLOP rule (`_rollout`), the sd at the
    end is least."""
    theta = np.asarray(fit.theta_, float)
    sigma = max(float(sigma), MIN_SIGMA)
    smallest = float(training_compute(N, D).min())
    chosen: list[dict] = []
    left = budget_left
    base_N, base_D = N, D
    end_sd = None
    for _ in range(STAGE_GROUPS):
        best = None
        for runs, cost in _affordable(fit, base_N, base_D, target_flops, stage, left, smallest, realize):
            sd0, sd1, _ = expected_shrink(theta, base_N, base_D, *_arrays(runs), target_flops, sigma)
            if not (sd0 > 0 and math.isfinite(sd1)):
                continue
            after_N, after_D = _with(base_N, base_D, runs)
            end = _rollout(theta, fit, after_N, after_D, sigma, target_flops, left - cost, stage, smallest)
            end = sd1 if end is None else end
            if best is None or (end, cost) < (best[0], best[2]):
                best = (end, runs, cost)
        if best is None:
            break
        end_sd, runs, cost = best
        chosen += runs
        left -= cost
        base_N, base_D = _with(base_N, base_D, runs)
    if not chosen:
        return [], {}
    sd0, sd1, ratio = expected_shrink(theta, N, D, *_arrays(chosen), target_flops, sigma)
    return chosen, {"sd_log_params_before": sd0, "sd_log_params_after": sd1, "shrink": ratio, "sigma": sigma,
                    "sd_log_params_at_budget_end": end_sd}


def plan_stage(target_flops: float, budget: float, N=(), D=(), L=(), *, fit=None, n_bootstrap: int = 200,
               seed: int = 0, confidence: float = 0.8, law_factory=None, realize=None,
               first_share: float = FIRST_SHARE, first_groups: int = FIRST_GROUPS,
               group_size: int = GROUP_SIZE) -> dict:
    """The next stage of the sweep (module docstring), JSON-ready.

    Args:
        target_flops: the compute of the run to size in the end (C = 6ND).
        budget: the compute to spend on small runs, all stages together (the runs so far count against it).
        N, D, L: the runs so far (dense or average non-zero parameters, tokens, final loss).
        fit: the law already fitted to them (default: a `ChinchillaFit`, when they allow one).
        n_bootstrap, seed, confidence: of the current interval on N_opt at the target.
        first_share: the share of the budget the first stage spends (`FIRST_SHARE`; a family that cannot train
            tiny runs needs more).
        first_groups, group_size: the first stage's isoFLOP groups and sizes per group (`FIRST_GROUPS`,
            `GROUP_SIZE`; fewer for a small budget).
        realize: `realize(runs) -> (runs, left out)`: the planned runs as the family can train them
            (`family_realizer`); candidates are scored as realized.

    Returns:
        {"target_flops", "budget", "spent", "stage", "stage_flops", "budget_left", "runs": [{"params", "tokens",
        "flops", "group", "stage"}], "basis": "prior" | "fit", "prior" or "fit", "expected" (with a fit: the sd of
        log N_opt before and after the stage, the shrink, the current and the expected interval), "done",
        "sentence"}.
    """
    N, D, L = _check(target_flops, budget, N, D, L)
    check_int(first_groups, "first_groups", 1)
    check_int(group_size, "group_size", MIN_GROUP)
    if budget >= target_flops:
        raise ConfigurationError(f"`budget` ({budget:.3g}) must be below `target_flops` ({target_flops:.3g}): the "
                                 "small runs are there to size the target run")
    spent = float(training_compute(N, D).sum()) if len(N) else 0.0
    left = budget - spent
    out = {"target_flops": float(target_flops), "budget": float(budget), "spent": spent, "n_runs": len(N)}
    first, first_dropped = _realized(first_stage(budget, first_share, 1, 0.0, first_groups, group_size), realize)
    stage = stage_number(N, D, first)
    dropped: list = []
    if fit is None and len(N):
        fit = _fit(N, D, L, law_factory)
    if fit is None or getattr(fit, "theta_", None) is None:
        runs = []
        if left > 0:
            runs, dropped = first, first_dropped
            todo = _new_runs(runs, N, D)
            if len(N) and not (todo and _inside(N, D, runs)):
                # the runs so far are not an unfinished first stage: a new bracket from 3x their largest compute
                above = float(training_compute(N, D).max())
                todo, dropped = _realized(first_stage(budget, first_share, stage, above, first_groups, group_size),
                                          realize)
                todo = _new_runs(todo, N, D)
            else:
                stage = 1  # an interrupted first stage: its remaining runs
            runs = todo
        while runs and sum(r["flops"] for r in runs) > left:  # what the budget affords, largest groups last
            runs = runs[:-1]
        out.update(basis="prior", prior={"law": PRIOR_NAME, "params_opt_at_target": prior_optimum(target_flops),
                                         "used_for": "the sizes of the first stage only (its optimum at each budget)"})
        if len(N):
            out["prior"]["why"] = "the runs so far do not allow a fit of the law yet"
    else:
        from lightning_scaling.evaluation.intervals import scatter

        sigma = scatter(fit, N, D, L)
        runs, expected = (next_stage(fit, N, D, sigma, target_flops, left, stage, realize) if left > 0
                          else ([], {}))
        with np.errstate(all="ignore"):
            n_opt = float(fit.compute_optimal(target_flops).params)
        out.update(basis="fit", fit={"law": fit.to_dict().get("fitted"), "params_opt_at_target": n_opt})
        if n_bootstrap:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lo, hi = fit.bootstrap(n_bootstrap, seed=seed, confidence=confidence).allocation_intervals(
                    target_flops)["params"]
            out["fit"].update(params_opt_low=float(lo), params_opt_high=float(hi), confidence=confidence)
            if expected and lo > 0 and math.isfinite(hi):
                s = expected["shrink"]
                expected["interval_now"] = [float(lo), float(hi)]
                expected["interval_expected"] = [n_opt * (lo / n_opt) ** s, n_opt * (hi / n_opt) ** s]
        out["expected"] = expected
    stage_flops = float(sum(r["flops"] for r in runs))
    out.update(stage=stage, runs=runs, stage_flops=stage_flops, budget_left=left - stage_flops,
               done=not runs)
    if dropped:
        out["left_out"] = dropped
    out["sentence"] = stage_sentence(out)
    return out


def _realized(runs: list[dict], realize) -> tuple[list, list]:
    return realize(runs) if realize is not None else (runs, [])


RESUME_MARGIN = 1.25  # runs within this factor of the first stage's compute range are its runs (dense or sparse)


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
    from lightning_scaling.law.isoflop import group_by_flops

    if not len(N):
        return 1
    first_levels = len({r["group"] for r in first}) if first else FIRST_GROUPS
    return 2 + max(0, len(group_by_flops(training_compute(N, D))) - first_levels)


def _fit(N, D, L, law_factory):
    from lightning_scaling.law.fit import ChinchillaFit

    factory = law_factory or ChinchillaFit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = factory().fit(N, D, L)
    except LightningScalingError:
        return None
    degenerate = [d for d in getattr(fit, "degenerate_", []) or [] if d.get("refuses", True)]
    return None if degenerate else fit


LEFT_OVER = 0.05  # a plan done with more than this share of its budget left says why


def stage_sentence(plan: dict) -> str:
    from lightning_scaling.planner.recommendation import format_count

    if plan["done"] and plan.get("left_out") and plan["budget_left"] > 0:
        return (f"No stage this family can train: {plan['left_out'][0]['reason']} (every group of the "
                f"{'first stage' if plan['basis'] == 'prior' else 'stage'} is left out; a larger budget, or shorter "
                "runs allowed, would make room).")
    if plan["done"] and plan["budget_left"] >= LEFT_OVER * plan["budget"]:
        return (f"No further stage: no group of at least {MIN_GROUP} new runs fits in what is left "
                f"({format_count(plan['budget_left'])} of {format_count(plan['budget'])} FLOPs) and lowers the "
                "uncertainty of N_opt at the target; train the target run the recommendation sizes.")
    if plan["done"]:
        return (f"The budget is spent ({format_count(plan['spent'])} of {format_count(plan['budget'])} FLOPs): no "
                "further stage; train the target run the recommendation sizes.")
    groups = sorted({r["group"] for r in plan["runs"]})
    s = (f"Stage {plan['stage']}: train {len(plan['runs'])} runs in {len(groups)} isoFLOP group"
         f"{'s' if len(groups) > 1 else ''} ({format_count(plan['stage_flops'])} FLOPs; "
         f"{format_count(max(plan['budget_left'], 0.0))} left of {format_count(plan['budget'])})")
    if plan["basis"] == "prior":
        s += ", bracketing the prior's optimum widely (no fit yet)"
    exp = plan.get("expected") or {}
    if exp.get("shrink") is not None:
        s += f"; expected to shrink the uncertainty of N_opt at the target to {exp['shrink']:.0%} of today's"
        if exp.get("interval_expected"):
            lo, hi = exp["interval_now"]
            elo, ehi = exp["interval_expected"]
            s += (f" (interval {format_count(lo)}..{format_count(hi)} now, about {format_count(elo)}.."
                  f"{format_count(ehi)} after)")
    return s + "."


MIN_STEPS = 100  # a planned run shorter than this many optimizer steps is left out
VALIDATIONS = 8  # a run validates about this many times: its loss curve, for whole-curve fits and forecasts


def validation_interval(steps: int, validations: int = VALIDATIONS) -> int:
    """The divisor of `steps` whose number of validations is nearest `validations` (a divisor, so that the last
    validation is at the last step: the run's final loss), at least one step.

    >>> validation_interval(1160), validation_interval(189), validation_interval(566)
    (145, 27, 283)
    >>> [steps // validation_interval(steps) for steps in (3655, 10965, 3480, 1008, 567)]
    [5, 5, 8, 8, 7]
    """
    divisors = [d for d in range(1, steps + 1) if steps % d == 0]
    return min(divisors, key=lambda d: (abs(steps // d - validations), -d))


TRANSFER = ("muP keeps the best base learning rate of the small proxy at every width (Yang et al. 2022) and the "
            "Power schedule's a and b hold across batch sizes and token budgets (Shen et al. 2024): keep them")


def transfers(settings: dict | None) -> bool:
    """Whether the family's settings carry muP and PowerLR, whose learning rate and batch size transfer as they
    are (`TRANSFER`)."""
    return bool(settings) and "muP" in settings and "PowerLR" in settings


def hyperparameters(runs: list[dict], settings: dict | None = None, sweeps=None) -> dict:
    """The learning rate and batch size for the planned runs: with muP and PowerLR in the family's settings, the
    ones that transfer and why; otherwise, per run, the team's own learning-rate law when the runs so far hold
    learning-rate sweeps (`sweeps` = (N, D, peak lr, loss) of those runs; `planner.hyperparameters.lr_sweeps`), and the
    published laws beside it as priors (`planner.hyperparameters`)."""
    from lightning_scaling.planner.hyperparameters import deepseek, fit_lr_law, lr_from_law, lr_sweeps, step_law

    settings = settings or {}
    if transfers(settings):
        return {"kind": "transfer", "settings": {k: settings[k] for k in ("muP", "PowerLR")}, "why": TRANSFER}
    found, reasons = lr_sweeps(*sweeps) if sweeps is not None else ([], [])
    law = fit_lr_law(found)
    for r in runs:
        lr, batch = step_law(r["params"], r["tokens"])
        lr2, batch2 = deepseek(r["params"], r["tokens"])
        r["hyperparameters"] = {"lr_step_law": float(lr), "batch_tokens_step_law": float(batch),
                                "lr_deepseek": float(lr2), "batch_tokens_deepseek": float(batch2)}
        if law is not None:
            r["hyperparameters"]["lr"] = float(lr_from_law(law, r["params"], r["tokens"]))
    priors = ("Step Law: eta = 1.79 N^-0.713 D^0.307, B = 0.58 D^0.571 tokens, N non-embedding; DeepSeek LLM: "
              "eta = 0.3118 C^-0.125, B = 0.2920 C^0.3271 tokens")
    if law is not None:
        kept = [name for name in ("p", "q") if name not in law["fitted"]]
        why = (f"your learning-rate sweeps ({law['sweeps']} at distinct N, D): eta = {law['k']:.4g} "
               f"N^{law['p']:.3f} D^{law['q']:.3f}" + (f" ({' and '.join(kept)} kept from Step Law: the sweeps do "
                                                         "not vary N and D enough to fit them)" if kept else "")
               + f", scatter {law['rmse_log']:.2f} in log lr; `lr` per run. The batch size and the published "
               f"laws stay priors ({priors})")
        out = {"kind": "fit", "why": why, "law": law, "sweeps": found, "settings": settings}
    else:
        out = {"kind": "prior", "settings": settings,
               "why": (f"no muP and PowerLR in the family: the published laws are priors ({priors}), fitted on "
                       "other models; learning-rate sweeps of your own (three or more learning rates at one "
                       "size and token count) replace them")}
    if reasons:
        out["sweeps_not_used"] = reasons
    return out


def _feasible(runs, hparams, propose_architecture, tokens_per_step, min_steps) -> tuple[list, list]:
    """Each group's sizes moved inside what the family can train: from its smallest architecture to the largest
    size that still gets `min_steps` optimizer steps at the group's compute, the group's count and geometric spacing
    kept; a group with less than `MIN_GROUP_RANGE` between those bounds is left out (with the reason)."""
    floor = None
    if propose_architecture:
        smallest = propose_architecture(1.0, dict(hparams))
        floor = float(smallest["params"]) if smallest and smallest.get("params") else None
    out, dropped = [], []
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["group"], []).append(r)
    for name, members in groups.items():
        sizes = np.array([r["params"] for r in members])
        flops = members[0]["flops"]
        lo, hi = float(sizes.min()), float(sizes.max())
        if floor is not None:
            lo = max(lo, floor)
        if tokens_per_step:
            hi = min(hi, flops / (FLOPS_PER_PARAM_TOKEN * min_steps * tokens_per_step))
        if hi < MIN_GROUP_RANGE * lo:
            dropped.append({"group": name, "flops": flops, "reason": (
                f"the family cannot train this group: from its smallest model ({lo:.3g} parameters) to the largest "
                f"with {min_steps} steps at this compute ({hi:.3g}) is less than {MIN_GROUP_RANGE:g}x")})
            continue
        if (lo, hi) != (float(sizes.min()), float(sizes.max())):
            members = group(flops, math.sqrt(lo * hi), math.sqrt(hi / lo), len(members), name, members[0]["stage"])
        out += members
    return out, dropped


MIN_GROUP_RANGE = 2.0  # a group's sizes span at least this ratio


def family_realizer(hparams: dict, propose_architecture, tokens_per_step: float | None = None,
                    min_steps: int = MIN_STEPS):
    """`realize(runs) -> (runs, left out)`: each group moved inside what the family can train (`_feasible`), each
    size the architecture `propose_architecture(params, hparams)` gives (its own parameter count; tokens adjusted
    to keep the run's compute), whole optimizer steps of `tokens_per_step` tokens when known (a multiple of
    `VALIDATIONS`, validated that often), two sizes that give one architecture trained once."""

    def realize(runs: list[dict]) -> tuple[list, list]:
        runs = [dict(r) for r in runs]
        runs, dropped = _feasible(runs, hparams, propose_architecture, tokens_per_step, min_steps)
        kept, seen = [], set()
        for r in runs:
            arch = propose_architecture(r["params"], dict(hparams)) if propose_architecture else None
            if arch:
                r["architecture"] = arch
                r["params"] = float(arch.get("params", r["params"]))
                r["tokens"] = r["flops"] / (FLOPS_PER_PARAM_TOKEN * r["params"])
            key = (r["group"], r["params"])
            if key in seen:
                continue
            seen.add(key)
            if tokens_per_step:
                steps = max(VALIDATIONS, VALIDATIONS * int(round(r["tokens"] / (tokens_per_step * VALIDATIONS))))
                r["steps"], r["val_check_interval"] = steps, steps // VALIDATIONS
                r["tokens"] = float(steps * tokens_per_step)
            r["flops"] = float(training_compute(r["params"], r["tokens"]))
            kept.append(r)
        return kept, dropped

    return realize


def with_family(plan: dict, command=None, settings: dict | None = None, sweeps=None) -> dict:
    """The plan's runs named (stage, compute, size) and, with `command(run)`, the command line that trains each;
    the learning rate and batch size (`hyperparameters`, with the runs so far as `sweeps`)."""
    for r in plan["runs"]:
        r["name"] = f"s{r['stage']}-{r['group'].split('-')[-1]}-N{r['params']:.3g}"
        if command is not None:
            r["command"] = command(r)
    plan["hyperparameters"] = hyperparameters(plan["runs"], settings, sweeps)
    plan["sentence"] = stage_sentence(plan)
    return plan

