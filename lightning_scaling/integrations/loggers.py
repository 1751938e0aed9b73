"""Adapters over Lightning loggers: run tags where the logger has them (MLflow), hyperparameters elsewhere.

Duck-typed so that this module imports neither MLflow nor any logger package: an MLflow logger is recognised by its
`experiment.set_tag` and `run_id`.
"""

from __future__ import annotations

from lightning_scaling.runs.schema import SCHEMA_TAG
from lightning_scaling.runs.secrets import keep_uri_out_of_output


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


START_ATTEMPTS = 5  # tries to open an MLflow run while other processes create the same experiment


def open_mlflow_runs(trainer) -> None:
    """Open the run of each MLflow logger now, retrying when a concurrent process created the experiment first.

    Lightning's MLflow logger looks the experiment up by name and creates it when missing; processes started
    together all miss it, and all but one fail with the database's unique-name error. A second look then finds the
    experiment the winner created. Loggers of other kinds are left alone (recognised by their module's name).

    Lightning opens the run itself before any callback hook runs, so no callback can do this: `lightning-scaling
    train` calls it before `fit`; with a plain Trainer, call it yourself between building the Trainer and
    ``trainer.fit`` when several processes start on a new experiment at once::

        trainer = Trainer(logger=MLFlowLogger(experiment_name="team", tracking_uri=URI), callbacks=[...])
        open_mlflow_runs(trainer)
        trainer.fit(model, datamodule)
    """
    import time

    for logger in trainer.loggers:
        if "mlflow" not in type(logger).__module__.lower():
            continue
        for attempt in range(START_ATTEMPTS):
            try:
                logger.experiment  # noqa: B018 - the property opens the run
                break
            except Exception:
                if attempt == START_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))


def keep_credentials_out_of_output(trainer) -> None:
    """For each MLflow logger whose tracking URI carries a password: MLflow prints a link to the run when it ends,
    built from that URI; `secrets.keep_uri_out_of_output` turns the printing off."""
    for logger in trainer.loggers:
        uri = getattr(logger, "_tracking_uri", None)
        if uri is None and run_id_of(logger):
            uri = getattr(getattr(logger, "experiment", None), "tracking_uri", None)
        keep_uri_out_of_output(uri)


def set_run_tags(logger, tags: dict[str, str]) -> bool:
    """Set tags on the logger's run when it supports tags (MLflow); returns whether it did."""
    experiment = getattr(logger, "experiment", None)
    run_id = getattr(logger, "run_id", None)
    if experiment is None or run_id is None or not hasattr(experiment, "set_tag"):
        return False
    for key, value in tags.items():
        experiment.set_tag(run_id, key, str(value))
    return True


def claim_run(logger, process: str) -> None:
    """Mark the logger's MLflow run as trained by `process` ("host:pid", `runs.schema.PROCESS_TAG`) and RUNNING: a
    sweep creates its runs SCHEDULED before their jobs start, and reads both to tell a live run from a dead one."""
    from lightning_scaling.runs.schema import PROCESS_TAG

    if set_run_tags(logger, {PROCESS_TAG: process}) and hasattr(logger.experiment, "update_run"):
        logger.experiment.update_run(logger.run_id, status="RUNNING")


def log_schema(logger, version: str) -> None:
    """Mark the run as written by `ScalingTracker` with this schema version: a tag, or a hyperparameter."""
    if not set_run_tags(logger, {SCHEMA_TAG: version}):
        logger.log_hyperparams({SCHEMA_TAG: version})
