"""Where a command's runs come from: RUNS.csv, or an MLflow experiment read as the closing hook reads it."""

from __future__ import annotations

from lightning_scaling.cli import deferred
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.planner.next_run import law_inputs
from lightning_scaling.runs.table import read_runs_csv


def store(args):
    """The run store of `--tracking-uri` and `--experiment` (both needed)."""
    if not args.tracking_uri or not args.experiment:
        raise ConfigurationError("give both --tracking-uri and --experiment (or, for `recommend`, a RUNS.csv)")
    return deferred.mlflow_store(args.tracking_uri, args.experiment, args.loss_key, args.stale_after)


def law_runs(args, peak_lr: bool = False) -> tuple:
    """(N, D, loss, extra, params_column) from RUNS.csv or from the MLflow experiment (as the closing hook reads it);
    with `peak_lr`, each run's peak learning rate too (RUNS.csv's `lr` column, None without it; the store's largest
    `scaling/lr` of each run)."""
    if args.runs is not None:
        table = read_runs_csv(args.runs)
        out = (table.N, table.D, table.loss, table.extra, table.params_column)
        return out + (table.lr,) if peak_lr else out
    runs = store(args)
    used = runs.select().used
    N, D, L, column = law_inputs(used)
    return (N, D, L, None, column) + ((runs.peak_learning_rates(used),) if peak_lr else ())
