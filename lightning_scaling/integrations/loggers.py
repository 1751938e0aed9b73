"""Adapters over Lightning loggers: run tags where the logger has them (MLflow), hyperparameters elsewhere.

Duck-typed so that this module imports neither MLflow nor any logger package: an MLflow logger is recognised by its
`experiment.set_tag` and `run_id`.
"""

from __future__ import annotations

from ..runs.schema import SCHEMA_TAG


def run_id_of(logger) -> str | None:
    """The tracking run id of a logger that has one (MLflow), else None."""
    run_id = getattr(logger, "run_id", None)
    return run_id if isinstance(run_id, str) else None


def mlflow_logger(trainer):
    """The trainer's MLflow logger: the first with a run id, an experiment id and an MLflow client (`experiment`,
    with its public `tracking_uri`), or None."""
    for logger in trainer.loggers:
        if run_id_of(logger) and getattr(logger, "experiment_id", None):
            client = getattr(logger, "experiment", None)
            if isinstance(getattr(client, "tracking_uri", None), str) and hasattr(client, "search_runs"):
                return logger
    return None


def set_run_tags(logger, tags: dict[str, str]) -> bool:
    """Set tags on the logger's run when it supports tags (MLflow); returns whether it did."""
    experiment = getattr(logger, "experiment", None)
    run_id = getattr(logger, "run_id", None)
    if experiment is None or run_id is None or not hasattr(experiment, "set_tag"):
        return False
    for key, value in tags.items():
        experiment.set_tag(run_id, key, str(value))
    return True


def log_schema(logger, version: str) -> None:
    """Mark the run as written by `ScalingTracker` with this schema version: a tag, or a hyperparameter."""
    if not set_run_tags(logger, {SCHEMA_TAG: version}):
        logger.log_hyperparams({SCHEMA_TAG: version})
