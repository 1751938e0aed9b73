"""Where a command's runs come from: RUNS.csv (`planner.read_runs`), or an MLflow experiment read as the closing hook
reads it (`planner.Runs.from_selection` of the store's selection, with the runs' curves or peak learning rates where
the command uses them)."""

from __future__ import annotations

from lightning_scaling.cli import deferred
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.planner import Runs, read_runs


def store(args):
    """The run store of `--tracking-uri` and `--experiment` (both needed)."""
    if not args.tracking_uri or not args.experiment:
        raise ConfigurationError("give both --tracking-uri and --experiment (or, for `recommend`, a RUNS.csv)")
    return deferred.mlflow_store(args.tracking_uri, args.experiment, args.loss_key, args.stale_after)


def store_runs(runs_store, curves: bool = False, lr: bool = False) -> Runs:
    """The usable runs of `runs_store` and the excluded ones, as the closing hook reads them: with `curves`, each
    run's loss curve with the learning rate at each validation (`curves(..., dense_lr=True, stopped=False)`, what
    the hook passes to the planner); with `lr`, each run's peak learning rate (`peak_learning_rates`)."""
    selection = runs_store.select()
    return Runs.from_selection(
        selection,
        curves=runs_store.curves(selection, dense_lr=True, stopped=False) if curves else None,
        lr=runs_store.peak_learning_rates(selection.used) if lr else None)


def runs(args, curves: bool = False, lr: bool = False) -> Runs:
    """The runs of RUNS.csv (its `lr` column, when present, as each run's peak learning rate), or of the MLflow
    experiment (`store_runs`)."""
    if args.runs is not None:
        return read_runs(args.runs)
    return store_runs(store(args), curves=curves, lr=lr)
