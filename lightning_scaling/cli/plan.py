"""`plan`: the next stage of small runs (isoFLOP groups) that most shrinks the interval on N_opt at the target
compute, within a compute budget (`planner.plan_sweep`); with the model family's config, each run's architecture
and training command."""

from __future__ import annotations

from lightning_scaling import plugins
from lightning_scaling.cli import sources
from lightning_scaling.cli.command import Command
from lightning_scaling.cli.options import (
    BOOTSTRAP,
    CONFIDENCE,
    EPILOG,
    FORMAT,
    RUNS,
    SEED,
    TRACKING,
    argument,
    positive_float,
)
from lightning_scaling.integrations import read_family, train_command
from lightning_scaling.planner import Family, Runs, StageOptions, StagePlan, plan_sweep, plan_text


def run_plan(args) -> StagePlan:
    """The plan from RUNS.csv or the MLflow experiment (with each run's peak learning rate: the team's own sweeps),
    or from the prior without runs."""
    if args.runs is not None or args.tracking_uri or args.experiment:
        runs = sources.runs(args, lr=True)
    else:
        runs = Runs.empty()
    options = StageOptions(target_flops=args.target_flops, budget=args.budget, n_bootstrap=args.bootstrap,
                           seed=args.seed, confidence=args.confidence)
    family = _family(args)
    return plan_sweep(runs, options, family)


def _family(args) -> Family:
    """The model family of `--config` (its architectures, tokens per step, settings and training command), or none."""
    if not args.config:
        return Family()
    family = read_family(args.config)
    return Family(hparams=family["hparams"], settings=family["settings"],
                  propose_architecture=plugins.propose_architecture, tokens_per_step=family["tokens_per_step"],
                  command=train_command(family, args.tracking_uri, args.experiment),
                  describe={k: family[k] for k in ("config", "model", "tokens_per_step")})


PLAN = Command(
    "plan", "the next stage of small runs (isoFLOP groups) that most shrinks the interval on N_opt at the target "
    "compute, within a compute budget",
    (RUNS.but(nargs="?", help="runs so far (or --tracking-uri/--experiment; none: plan from the prior)"), TRACKING,
     argument("--target-flops", type=positive_float, required=True, metavar="C",
              help="compute of the run to size in the end (C = 6 N D)"),
     argument("--budget", type=positive_float, required=True, metavar="B",
              help="compute to spend on small runs, all stages together (the runs so far count against it)"),
     argument("--config", metavar="FAMILY.yaml", help="the LightningCLI config of the model family: each run gets an "
              "architecture and the command that trains it"),
     BOOTSTRAP.but(default=200, help="bootstrap replicates of the current interval on N_opt (default 200)"),
     SEED.but(help="seed of the bootstrap (default 0)"),
     CONFIDENCE.but(help="central probability of the interval"), FORMAT),
    run_plan, plan_text, epilog=EPILOG)
