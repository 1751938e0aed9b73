"""A later stage of the sweep, chosen by rollout (Bertsekas' rollout policy: one step of lookahead over a base
policy) over a sequential c-optimal design (`planner.design`) at the current estimate and the runs' scatter.

The candidate groups are a budget of `BUDGET_STEPS` times the largest compute so far, `GROUP_COUNTS` sizes spanning
1/s..s of the fitted optimum there, s in `SPREADS`, and groups spending what is left of the budget. The base policy
spends the budget group by group, each time the group whose fall of the standard deviation of log N_opt at the
target per FLOP is largest; alone it favours cheap groups, and the linearised shrink undervalues the lever arm of
larger compute. Each candidate is therefore scored by the standard deviation predicted once it is trained *and* the
rest of the budget is spent by the base policy, and the stage takes the candidate with the least (up to
`STAGE_GROUPS` groups).
"""

from __future__ import annotations

import math

import numpy as np

from lightning_scaling.planner.design import expected_shrink, group
from lightning_scaling.planner.options import MIN_GROUP
from lightning_scaling.schedules.flops import training_compute

BUDGET_STEPS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # later groups: these multiples of the largest compute so far
SPREADS = (2.0, 4.0)  # ... sizes from 1/s to s times the fitted optimum at that budget
GROUP_COUNTS = (3, 5)
STAGE_GROUPS = 1  # a later stage is one isoFLOP group: its runs train side by side, then the plan is refitted
ROLLOUT_GROUPS = 8  # the rollout that ranks a stage's group spends the rest of the budget in at most this many
SAME_RUN = 0.02  # runs within 2% in both N and D count as the same run
MIN_SIGMA = 0.002  # the runs' scatter in log loss assumed at least this (an exact fit would promise everything)


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


def new_runs(runs: list[dict], N, D) -> list[dict]:
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


def affordable(fit, N, D, target_flops: float, stage: int, left: float, smallest: float, realize=None):
    """(runs, cost) of every candidate group after the runs (N, D) (`candidates`, as the family realizes them
    with `realize`), new and within the budget `left`."""
    out = []
    for runs in candidates(fit, float(training_compute(N, D).max()), target_flops, stage, left, smallest):
        if realize is not None:
            runs = realize(runs)[0]
        runs = new_runs(runs, N, D)
        cost = sum(r["flops"] for r in runs)
        if len(runs) >= MIN_GROUP and cost <= left:
            out.append((runs, cost))
    return out


def _with(N, D, runs):
    return (np.concatenate([N, [r["params"] for r in runs]]), np.concatenate([D, [r["tokens"] for r in runs]]))


def rollout(fit, N, D, sigma: float, target_flops: float, left: float, stage: int, smallest: float):
    """The sd of log N_opt at the target once `left` is spent after the runs (N, D) by the per-FLOP rule: group
    after group, the one whose fall of the log sd per FLOP is largest (at most `ROLLOUT_GROUPS` groups; candidates
    as planned, not realized: the rollout only ranks the first group)."""
    theta = np.asarray(fit.theta_, float)
    sd = None
    for _ in range(ROLLOUT_GROUPS):
        best = None
        for runs, cost in affordable(fit, N, D, target_flops, stage, left, smallest):
            sd0, sd1, _ = expected_shrink(theta, N, D, *arrays(runs), target_flops, sigma)
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


def arrays(runs):
    return np.array([r["params"] for r in runs]), np.array([r["tokens"] for r in runs])


def next_stage(fit, N, D, sigma: float, target_flops: float, budget_left: float, stage: int,
               realize=None) -> tuple[list, dict]:
    """The later stage's runs and the expected shrink of log N_opt's sd at the target (module docstring): the
    candidate group after which, the rest of the budget spent by the per-FLOP rule (`rollout`), the sd at the
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
        for runs, cost in affordable(fit, base_N, base_D, target_flops, stage, left, smallest, realize):
            sd0, sd1, _ = expected_shrink(theta, base_N, base_D, *arrays(runs), target_flops, sigma)
            if not (sd0 > 0 and math.isfinite(sd1)):
                continue
            after_N, after_D = _with(base_N, base_D, runs)
            end = rollout(fit, after_N, after_D, sigma, target_flops, left - cost, stage, smallest)
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
    sd0, sd1, ratio = expected_shrink(theta, N, D, *arrays(chosen), target_flops, sigma)
    return chosen, {"sd_log_params_before": sd0, "sd_log_params_after": sd1, "shrink": ratio, "sigma": sigma,
                    "sd_log_params_at_budget_end": end_sd}
