"""`plan`: the next stage of small runs (isoFLOP groups) that most shrinks the interval on N_opt at the target
compute, within a compute budget; with the model family's config, each run's architecture and training command."""

from __future__ import annotations

import warnings

import numpy as np

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
from lightning_scaling.integrations.family import read_family, train_command
from lightning_scaling.planner.recommendation import format_count
from lightning_scaling.planner.stages import family_realizer, plan_stage, with_family


def run_plan(args) -> dict:
    sweeps = None
    if args.runs is not None or args.tracking_uri or args.experiment:
        N, D, L, _, _, lr = sources.law_runs(args, peak_lr=True)
        if lr is not None:
            sweeps = (N, D, lr, L)
    else:
        N = D = L = np.zeros(0)
    family = read_family(args.config) if args.config else None
    return _plan(args, (N, D, L), family, sweeps)


def _plan(args, runs: tuple, family: dict | None, sweeps: tuple | None) -> dict:
    realize, command = None, None
    if family:
        realize = family_realizer(family["hparams"], plugins.propose_architecture, family["tokens_per_step"])
        command = train_command(family, args.tracking_uri, args.experiment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = plan_stage(args.target_flops, args.budget, *runs, n_bootstrap=args.bootstrap, seed=args.seed,
                          confidence=args.confidence, realize=realize)
    plan = with_family(plan, command, family["settings"] if family else None, sweeps)
    if family:
        plan["family"] = {k: family[k] for k in ("config", "model", "tokens_per_step")}
    return plan


def plan_text(plan: dict) -> str:
    lines = [plan["sentence"], ""]
    if plan["basis"] == "prior":
        lines.append(f"prior: {plan['prior']['law']} ({plan['prior']['used_for']})")
    else:
        fit = plan["fit"]
        s = f"law now: {fit['law']}; N_opt at the target {format_count(fit['params_opt_at_target'])}"
        if "params_opt_low" in fit:
            s += (f" ({int(round(100 * fit['confidence']))}% interval {format_count(fit['params_opt_low'])}.."
                  f"{format_count(fit['params_opt_high'])})")
        lines.append(s)
    if plan["runs"]:
        lines += ["", f"  {'group':<16} {'params':>10} {'tokens':>10} {'FLOPs':>10}  command"]
        for r in plan["runs"]:
            lines.append(f"  {r['group']:<16} {format_count(r['params']):>10} {format_count(r['tokens']):>10} "
                         f"{r['flops']:>10.3g}  {r.get('command', '')}")
    hp = plan.get("hyperparameters") or {}
    if hp:
        lines += ["", f"learning rate and batch size ({hp['kind']}): {hp['why']}"]
        lines += [f"  learning-rate sweep not used: {why}" for why in hp.get("sweeps_not_used", [])]
    return "\n".join(lines)


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
