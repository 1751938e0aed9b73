"""The heavy optional stacks, imported when a command that needs them is chosen and nowhere else in the command line.

`fit RUNS.csv`, `recommend RUNS.csv`, `backtest`, `predict`, `forecast` and `plan` from CSV files need numpy and
scipy only, and `lightning-scaling --help` should answer at once; importing MLflow takes a second or so, Lightning
with torch several. So the adapters that pull them in (the MLflow run store, LightningCLI, the muP coordinate check)
are imported inside the functions below, the one place where the command line defers an import.
"""

from __future__ import annotations


def mlflow_store(tracking_uri: str, experiment: str, loss_key: str, stale_after: float):
    """The experiment's `MLflowRunStore` (imports MLflow)."""
    from lightning_scaling.integrations import MLflowRunStore

    return MLflowRunStore(tracking_uri, experiment_name=experiment, loss_key=loss_key, stale_after=stale_after)


def train(argv: list[str]) -> int:
    """LightningCLI's `fit` on `argv` (imports Lightning and torch)."""
    from lightning_scaling.integrations import run_cli

    return run_cli(argv)


def coord_check(config: dict) -> dict:
    """The muP coordinate check of each parametrisation in `config` (imports torch)."""
    from lightning_scaling.nn import coord_check_from_config

    return coord_check_from_config(config)
