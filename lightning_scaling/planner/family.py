"""The plan's runs as the model family can train them, and what to train them with.

`family_realizer` moves each planned isoFLOP group inside what the family can train (from its smallest
architecture to the largest size that still gets `min_steps` optimizer steps at the group's compute), gives each
size the architecture the `propose_architecture` hook proposes (its own parameter count; tokens adjusted to keep
the run's compute) and whole optimizer steps, validated `VALIDATIONS` times. `with_family` names the runs, adds the
command line that trains each, and the learning rate and batch size (`hyperparameters`): with muP and PowerLR they
transfer as they are; otherwise the team's own learning-rate law from its sweeps, with the published laws as priors.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from lightning_scaling.planner.design import group
from lightning_scaling.planner.hyperparameters import deepseek, fit_lr_law, lr_from_law, lr_sweeps, step_law
from lightning_scaling.planner.options import MIN_STEPS
from lightning_scaling.planner.report import stage_sentence
from lightning_scaling.planner.results import StagePlan
from lightning_scaling.schedules.flops import FLOPS_PER_PARAM_TOKEN, training_compute

VALIDATIONS = 8  # a run validates about this many times: its loss curve, for whole-curve fits and forecasts
MIN_GROUP_RANGE = 2.0  # a group's sizes span at least this ratio
PRIORS = ("Step Law: eta = 1.79 N^-0.713 D^0.307, B = 0.58 D^0.571 tokens, N non-embedding; DeepSeek LLM: "
          "eta = 0.3118 C^-0.125, B = 0.2920 C^0.3271 tokens")


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
    priors = PRIORS
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


def with_family(plan, command=None, settings: dict | None = None, sweeps=None):
    """The plan (a `StagePlan`, or its dict: the same kind is returned) with its runs named (stage, compute, size)
    and, with `command(run)`, the command line that trains each; the learning rate and batch size
    (`hyperparameters`, with the runs so far as `sweeps`)."""
    typed = plan if isinstance(plan, StagePlan) else StagePlan.from_dict(plan)
    runs = [dict(r) for r in typed.runs]
    for r in runs:
        r["name"] = f"s{r['stage']}-{r['group'].split('-')[-1]}-N{r['params']:.3g}"
        if command is not None:
            r["command"] = command(r)
    hp = hyperparameters(runs, settings, sweeps)
    typed = replace(typed, runs=tuple(runs), hyperparameters=hp)
    typed = replace(typed, sentence=stage_sentence(typed))
    return typed if isinstance(plan, StagePlan) else typed.to_dict()
