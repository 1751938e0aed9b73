"""The sweep's plan in one call, for the command line and the closing hook alike: the next stage of small runs
(`planner.stages`) as the model family trains them (`planner.family`: architectures, whole steps, the command that
trains each run, the learning rate and batch size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from lightning_scaling.planner.family import family_realizer, transfers, with_family
from lightning_scaling.planner.inputs import Runs
from lightning_scaling.planner.options import StageOptions
from lightning_scaling.planner.results import StagePlan
from lightning_scaling.planner.stages import stage_plan


@dataclass(frozen=True)
class Family:
    """The model family the planned runs belong to.

    Args:
        hparams: the model's hyperparameters (what `propose_architecture` reads).
        settings: the learning-rate, muP and pruning settings of its callbacks (muP and PowerLR: the learning rate
            and batch size transfer as they are).
        propose_architecture: `f(params, hparams) -> dict | None` (the plugin hook); None: sizes stay as planned.
        tokens_per_step: tokens per optimizer step (runs in whole steps); None when unknown.
        command: `command(run) -> str`, the command line that trains a planned run; None for none.
        describe: ``family`` in the plan (e.g. the config file, the model and its tokens per step); None for none.
    """

    hparams: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    propose_architecture: Callable | None = None
    tokens_per_step: float | None = None
    command: Callable[[dict], str] | None = None
    describe: dict | None = None


def plan_sweep(runs: Runs, options: StageOptions, family: Family | None = None) -> StagePlan:
    """The next stage of the sweep for `runs` (`stages.stage_plan`), realized by the family (`family_realizer`
    with `options.min_steps`) when it proposes architectures or knows its tokens per step; its runs named, with
    their commands and learning rates (`family.with_family`: the runs' own peak learning rates, `runs.lr`, are the
    sweeps it reads unless muP and PowerLR transfer). Inside `law.form.shared_fits` the law is the fit the
    recommendation made of the same runs."""
    family = family or Family()
    realizer = None
    if family.propose_architecture is not None or family.tokens_per_step:
        realizer = family_realizer(family.hparams, family.propose_architecture, family.tokens_per_step,
                                   options.min_steps)
    plan = stage_plan(runs, options, realize=realizer)
    sweeps = None
    if runs.lr is not None and not transfers(family.settings):
        sweeps = (runs.N, runs.D, runs.lr, runs.L)
    plan = with_family(plan, family.command, family.settings or None, sweeps)
    return replace(plan, family=family.describe) if family.describe is not None else plan
