"""`sweep`: the scaling practice run by the package: plan a stage, train its runs on an executor (local workers,
SLURM, Ray or a plugin's), refit, until the budget is spent; then the recommendation (`lightning_scaling.sweep`)."""

from __future__ import annotations

from lightning_scaling.cli.command import Command
from lightning_scaling.cli.options import argument, positive_float
from lightning_scaling.runs import redact


def run_sweep_command(args):
    from lightning_scaling.sweep import load_sweep_config, run_sweep

    config = load_sweep_config(args.config, target_flops=args.target_flops, budget=args.budget,
                               executor=args.executor, workers=args.workers, tracking_uri=args.tracking_uri,
                               experiment=args.experiment, train_target=args.train_target, folder=args.folder)
    try:
        return run_sweep(config)
    except KeyboardInterrupt:  # the sweep said how to go on; its state is in the store
        raise SystemExit(130) from None


def sweep_text(result) -> str:
    from lightning_scaling.sweep.target import target_text

    share = result.refit_s / result.wall_s if result.wall_s else 0.0
    lines = [f"\nsweep finished in {result.wall_s:.0f} s: {len(result.finished)} runs finished "
             f"({result.trained_now} trained now), {len(result.left_out)} left out; spent {result.spent:.3g} FLOPs"
             + (f"; stopping hopeless runs saved {result.saved:.3g} FLOPs" if result.saved else
                "; no run was stopped as hopeless")
             + f"; refits took {result.refit_s:.1f} s ({100 * share:.1f}% of the wall time)"]
    lines += [f"  left out {r.name}: {r.left_out}" for r in result.left_out]
    if result.note:
        lines += ["", result.note]
    uri, link = result.link if result.link else (None, None)
    if link:
        lines += ["", "Open it in the MLflow UI:", f"  mlflow ui --backend-store-uri {uri}",
                  f"  then http://127.0.0.1:5000/{link}"]
    if result.target is not None:
        lines += ["", target_text(result.target, result.target.get("achieved"))]
    return redact("\n".join(lines))


SWEEP = Command(
    "sweep", "run the scaling practice: plan a stage, train its runs on an executor, refit, until the budget is "
    "spent; then recommend the target run",
    (argument("--config", required=True, metavar="SWEEP.yaml",
              help="a YAML with a `sweep:` section (family, budget, executor...), or the model family's "
              "LightningCLI config itself"),
     argument("--target-flops", type=positive_float, metavar="C", help="compute of the run to size in the end"),
     argument("--budget", type=positive_float, metavar="B", help="compute of all the small runs together"),
     argument("--executor", metavar="NAME", help="local (default), slurm, ray, or a plugin's engine"),
     argument("--workers", type=int, metavar="K", help="local: runs at once (default: as the cores allow)"),
     argument("--tracking-uri", metavar="URI", help="the MLflow store (default: the family's MLFlowLogger)"),
     argument("--experiment", metavar="NAME", help="the MLflow experiment (default: the family's MLFlowLogger)"),
     argument("--folder", metavar="DIR", help="where runs' logs and checkpoints go (default sweeps/EXPERIMENT)"),
     argument("--train-target", action="store_true", help="then train the recommended run and compare its loss "
              "with the prediction")),
    run_sweep_command, sweep_text)
