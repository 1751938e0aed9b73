"""The MLflow run store: read every run of an experiment as a `RunRecord`, and publish recommendations.

Reading: all runs of the experiment, page by page (`search_runs` returns at most 1000 at a time), each turned into
a record from the `ScalingTracker` schema (metrics `scaling/*`, the loss metric `loss_key`, params `scaling/*`,
tags `lightning_scaling.schema` and `lightning_scaling.resumed_from`); the loss history is read to tell a diverged
run. Works with any tracking URI MLflow accepts (`sqlite:///mlflow.db`, `http://127.0.0.1:5000`); credentials come
from MLflow's own environment variables (MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN) and are never written
anywhere by this module.

Publishing: the run description (`mlflow.note.content`, rendered as markdown in the MLflow UI), plain-number tags
(`lightning_scaling.next_params`, `.next_tokens`, `.next_flops`, `.predicted_loss`) and artifacts under
`scaling_law/` (recommendation.json, frontier.png, isoflop.png), on the run and on the experiment's summary run
(run name `scaling-law`), created on first use.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lightning_scaling.errors import ConfigurationError, LightningScalingError
from lightning_scaling.planner import experiment_markdown, recommendation_markdown, refit_metrics
from lightning_scaling.runs import schema
from lightning_scaling.runs.records import STALE_AFTER_S, RunRecord, Selection, select_runs
from lightning_scaling.runs.schema import (
    BEST_TAG,
    COMPLETE_TAG,
    N_RUNS_TAG,
    RESUMED_FROM_TAG,
    SCHEMA_TAG,
    STOPPED_EARLY_TAG,
    SUMMARY_TAG,
)
from lightning_scaling.runs.secrets import keep_uri_out_of_output, redact

SUMMARY_RUN_NAME = "scaling-law"
NOTE_TAG = "mlflow.note.content"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # the MLflow 3 UI shows training experiments in its classic view
NUMBER_TAGS = {
    "lightning_scaling.next_params": "params",
    "lightning_scaling.next_tokens": "tokens",
    "lightning_scaling.next_flops": "flops",
    "lightning_scaling.predicted_loss": "loss",
}
PAGE_SIZE = 1000  # MLflow's maximum for search_runs
CLOCK_SKEW_MS = 60_000  # end times are stamped by each client's clock


TAG_WRITE_ATTEMPTS = 5  # a tag written by two processes at once: MLflow's sqlite store inserts after a lookup


def _float(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


class MLflowRunStore:
    """Runs of one MLflow experiment, as run records.

    Args:
        tracking_uri: e.g. "sqlite:///mlflow.db" or "http://127.0.0.1:5000".
        experiment_name: the experiment (or give `experiment_id`).
        loss_key: the metric holding the final loss (default "val_loss").
    """

    def __init__(self, tracking_uri: str, experiment_name: str | None = None, experiment_id: str | None = None,
                 loss_key: str = "val_loss", stale_after: float = STALE_AFTER_S):
        if (experiment_name is None) == (experiment_id is None):
            raise ConfigurationError("give exactly one of `experiment_name` or `experiment_id`")
        self.tracking_uri = tracking_uri
        keep_uri_out_of_output(tracking_uri)  # MLflow prints run links built from the URI when a run ends
        self.client = MlflowClient(tracking_uri)
        self.loss_key = loss_key
        self.stale_after = stale_after
        if experiment_id is None:
            experiment = self.client.get_experiment_by_name(experiment_name)
            if experiment is None:
                names = [e.name for e in self.client.search_experiments(max_results=50)]
                raise ConfigurationError(redact(
                    f"no MLflow experiment named {experiment_name!r} at {tracking_uri}; experiments there: {names}"
                ))
            experiment_id = experiment.experiment_id
        self.experiment_id = experiment_id

    # -- reading ----------------------------------------------------------------------------------------------
    def runs(self, filter_string: str = "") -> list:
        """Every active run of the experiment (matching `filter_string`), reading every page of `search_runs`."""
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=filter_string,
                                           run_view_type=ViewType.ACTIVE_ONLY, max_results=PAGE_SIZE,
                                           order_by=["attributes.start_time ASC"], page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def record(self, run) -> RunRecord:
        metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
        if tags.get(SUMMARY_TAG) == "true":  # left out by the selection; read nothing more (another hook may be
            # creating or deleting it right now)
            return RunRecord(run_id=run.info.run_id, run_name=run.info.run_name, status=run.info.status,
                             start_time=run.info.start_time, is_summary=True)
        loss = metrics.get(self.loss_key)
        best = None
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            best = _best_from_tag(tags.get(BEST_TAG), self.loss_key)
            if best is None:  # not written by this tracker version: the history says
                history = [m.value for m in self.client.get_metric_history(run.info.run_id, self.loss_key)]
                best = min((v for v in history if math.isfinite(v)), default=None)
            else:
                best = min(best, loss)
        basis = params.get(schema.PARAMS_BASIS, "non_embedding")
        last_activity = None
        if run.info.status == "RUNNING":  # how long since it last logged: a killed process leaves a RUNNING run
            stamps = [m.timestamp for key in (schema.TOKENS, self.loss_key)
                      for m in self.client.get_metric_history(run.info.run_id, key)]
            last_activity = max(stamps, default=run.info.start_time)
        return RunRecord(
            run_id=run.info.run_id,
            run_name=run.info.run_name,
            status=run.info.status,
            schema=tags.get(SCHEMA_TAG, params.get(SCHEMA_TAG)),
            params=metrics.get(schema.PARAMS_AVG),
            params_dense=_float(params.get(schema.params_count_key(basis))),
            tokens=metrics.get(schema.TOKENS),
            flops=metrics.get(schema.FLOPS),
            loss=loss,
            best_loss=best,
            sparsity=metrics.get(schema.SPARSITY),
            config={k: v for k, v in params.items() if k.startswith(schema.PARAMS_PREFIX)},
            resumed_from=tags.get(RESUMED_FROM_TAG),
            start_time=run.info.start_time,
            is_summary=tags.get(SUMMARY_TAG) == "true",
            complete=tags.get(COMPLETE_TAG) == "true",
            last_activity=last_activity,
            stopped_early=tags.get(STOPPED_EARLY_TAG) or None,
        )

    def records(self, runs=None) -> list[RunRecord]:
        """The run records of `runs` (default: every run of the experiment); a run deleted while it was being read
        (a summary run that lost the race to another hook) is skipped."""
        out = []
        for run in self.runs() if runs is None else runs:
            try:
                out.append(self.record(run))
            except MlflowException:
                try:
                    gone = self.client.get_run(run.info.run_id).info.lifecycle_stage != "active"
                except MlflowException:
                    gone = True
                if not gone:
                    raise
        return out

    def select(self, current_run_id: str | None = None) -> Selection:
        return select_runs(self.records(), current_run_id=current_run_id, loss_key=self.loss_key,
                           stale_after=self.stale_after)

    def more_usable_since(self, selection: Selection, since_ms: int, current_run_id: str | None = None) -> bool:
        """Whether a run not in `selection.used` has become usable since `since_ms` (ms since the epoch): read only
        the runs that ended since then (less `CLOCK_SKEW_MS`, for other machines' clocks) and those still RUNNING,
        not the whole experiment."""
        changed = self.runs(f"attributes.end_time >= {int(since_ms) - CLOCK_SKEW_MS}")
        changed += self.runs("attributes.status = 'RUNNING'")
        known = {r.run_id for r in selection.used}
        fresh = select_runs(self.records(changed), current_run_id=current_run_id,
                            loss_key=self.loss_key, stale_after=self.stale_after)
        return any(r.run_id not in known for r in fresh.used)

    def curves(self, selection: Selection, max_runs: int = 64, dense_lr: bool = False,
               stopped: bool = True) -> list:
        """The loss curves (`curves.forecast.Curve`) of the runs used by `selection` and (with `stopped`) of the runs
        stopped early: the loss metric's history at each validation with `scaling/lr` interpolated there; the
        `max_runs` most recent, two history requests each. Runs without both histories are skipped. With
        `dense_lr` the curve also holds every step at which the learning rate was logged (its loss NaN there):
        the schedule at full resolution, for the checkpoints' correction (`curves.correction`)."""
        import numpy as np

        from lightning_scaling.curves.forecast import Curve

        early = [r for r, why in selection.excluded if why.startswith("stopped early")] if stopped else []
        runs = sorted([*selection.used, *early], key=lambda r: -(r.start_time or 0))[:max_runs]
        out = []
        for r in runs:
            try:
                loss = self.client.get_metric_history(r.run_id, self.loss_key)
                lr = self.client.get_metric_history(r.run_id, schema.LR)
            except MlflowException:  # deleted while read
                continue
            loss = sorted({m.step: m.value for m in loss if m.step >= 1 and math.isfinite(m.value)}.items())
            lr = sorted({m.step: m.value for m in lr if m.step >= 1 and math.isfinite(m.value)}.items())
            if len(loss) < 2 or len(lr) < 2:
                continue
            steps = np.array([s for s, _ in loss], float)
            values = np.array([v for _, v in loss])
            if dense_lr:
                every = np.union1d(steps, [s for s, _ in lr])
                values = np.where(np.isin(every, steps), np.interp(every, steps, values), np.nan)
                steps = every
            lr_at = np.interp(steps, [s for s, _ in lr], [v for _, v in lr])
            # tokens at each step at the run's own rate (its tokens over its last step), and its N: the law across
            # runs' final losses (`curves.stacking`) reads both; a run stopped early has no final loss, so no N here
            tokens = (steps * (r.tokens / steps[-1]) if r.tokens and r.tokens > 0 and math.isfinite(r.tokens)
                      else None)
            params = (r.params if r not in early and r.params and r.params > 0 and math.isfinite(r.params)
                      else None)
            try:
                out.append(Curve(r.run_id, steps, lr_at, values, tokens=tokens, params=params))
            except LightningScalingError:
                continue
        return out

    def peak_learning_rates(self, records) -> list[float]:
        """Each record's peak learning rate: the largest `scaling/lr` it logged (PowerLR or LossForecast write it),
        NaN where it logged none; one history request per run (for learning-rate sweeps, `planner.hyperparameters`)."""
        out = []
        for r in records:
            try:
                values = [m.value for m in self.client.get_metric_history(r.run_id, schema.LR)
                          if math.isfinite(m.value)]
            except MlflowException:  # deleted while read
                values = []
            out.append(max(values) if values else math.nan)
        return out

    # -- publishing -------------------------------------------------------------------------------------------
    def mark_training_experiment(self) -> None:
        _retry_unique(self.client.set_experiment_tag, self.experiment_id, EXPERIMENT_KIND_TAG,
                      "custom_model_development")

    def summary_runs(self) -> list:
        """Every summary run of the experiment, the one in use first (the earliest created; ties by run id)."""
        found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{SUMMARY_TAG}` = 'true'",
                                        run_view_type=ViewType.ACTIVE_ONLY, max_results=PAGE_SIZE)
        return sorted(found, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    def summary_run(self):
        """The experiment's summary run (run name `scaling-law`), or None before the first recommendation."""
        found = self.summary_runs()
        return found[0] if found else None

    def summary_n_runs(self) -> int | None:
        """How many runs the summary run's recommendation was fitted on (its `lightning_scaling.n_runs` tag), or
        None before the first."""
        summary = self.summary_run()
        held = None if summary is None else _float(summary.data.tags.get(N_RUNS_TAG))
        return None if held is None else int(held)

    def latest_recommendation(self) -> dict | None:
        """The last recommendation published on the summary run (its `scaling_law/recommendation.json`), or None."""
        summary = self.summary_run()
        if summary is None:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client.download_artifacts(summary.info.run_id, "scaling_law/recommendation.json", tmp)
            except (MlflowException, OSError):  # a summary run whose recommendation was never written
                return None
            return json.loads(Path(path).read_text())

    def summary_run_id(self) -> str:
        """The experiment's summary run (run name `scaling-law`), created on first use.

        Closing hooks of runs that end together may both find none and both create one: each then reads the
        summary runs back, all agree on the earliest, and a hook whose own creation lost deletes it, so the
        experiment keeps exactly one.
        """
        found = self.summary_run()
        if found is not None:
            return found.info.run_id
        mine = self.client.create_run(self.experiment_id, run_name=SUMMARY_RUN_NAME, tags={SUMMARY_TAG: "true"})
        self.client.set_terminated(mine.info.run_id, "FINISHED")
        winner = self.summary_run()
        if winner is not None and winner.info.run_id != mine.info.run_id:
            self.client.delete_run(mine.info.run_id)
            return winner.info.run_id
        return mine.info.run_id

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        """`MlflowClient.set_tag`, tried again when another process wrote the same new tag at the same moment."""
        _retry_unique(self.client.set_tag, run_id, key, value)

    def publish(self, run_id: str, rec: dict, figures: dict[str, str] | None = None) -> None:
        """Write the recommendation onto a run: note, number tags, JSON and figures under `scaling_law/`."""
        self.set_tag(run_id, NOTE_TAG, redact(recommendation_markdown(rec)))
        if rec.get("status") == "ok":
            for tag, key in NUMBER_TAGS.items():
                self.set_tag(run_id, tag, f"{float(rec[key]):.4g}")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "recommendation.json"
            path.write_text(redact(json.dumps(rec, indent=2, default=_json_default)))
            self.client.log_artifact(run_id, str(path), "scaling_law")
        for local in (figures or {}).values():
            self.client.log_artifact(run_id, local, "scaling_law")

    def publish_everywhere(self, rec: dict, run_ids=(), force: bool = False) -> bool:
        """Render the figures once and publish the recommendation on `run_ids` and on the summary run.

        The summary run is updated only when `rec` was fitted on at least as many runs as the one it holds (its
        `lightning_scaling.n_runs` tag), so that of two closing hooks racing, the one that saw fewer finished runs
        does not overwrite the other (`force`: write it anyway, as `recommend --publish` does); returns whether the
        summary was written.
        """
        from lightning_scaling.integrations.plots import frontier_figure, isoflop_figure

        self.mark_training_experiment()
        summary_id = self.summary_run_id()
        held = _float(self.client.get_run(summary_id).data.tags.get(N_RUNS_TAG))
        write_summary = force or held is None or int(rec.get("n_runs", 0)) >= held
        with tempfile.TemporaryDirectory() as tmp:
            figures = {}
            if rec.get("figures"):  # a fitted law (recommended, or refused as degenerate): draw it
                figures = {"frontier": frontier_figure(rec, Path(tmp) / "frontier.png"),
                           "isoflop": isoflop_figure(rec, Path(tmp) / "isoflop.png")}
            for run_id in (*run_ids, *([summary_id] if write_summary else [])):
                self.publish(run_id, rec, figures)
        if write_summary:
            self.set_tag(summary_id, N_RUNS_TAG, str(int(rec.get("n_runs", 0))))
            self.log_refit(summary_id, rec)
            _retry_unique(self.client.set_experiment_tag, self.experiment_id, NOTE_TAG,
                          redact(experiment_markdown(rec)))
        return write_summary

    def log_refit(self, summary_id: str, rec: dict) -> None:
        """The refit's law parameters, N_opt with its interval and the predicted loss as metrics of the summary run
        at step = the number of runs fitted: MLflow's charts then show how the recommendation converged."""
        metrics = refit_metrics(rec)
        if not metrics:
            return
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(rec.get("n_runs", 0))
        self.client.log_batch(summary_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def note(self, run_id: str, text: str) -> None:
        self.set_tag(run_id, NOTE_TAG, redact(text))


def _retry_unique(write, *args) -> None:
    """Call `write(*args)` (a tag write), again when another process wrote the same new tag at the same moment.

    MLflow's database store looks a tag up and then inserts it; two closing hooks writing a new tag of the summary
    run together make one insert fail on the (key, run) unique constraint, and the row then exists, so a second
    attempt updates it.
    """
    for attempt in range(TAG_WRITE_ATTEMPTS):
        try:
            write(*args)
            return
        except MlflowException as err:
            if attempt == TAG_WRITE_ATTEMPTS - 1 or not _is_unique_violation(err):
                raise
            time.sleep(0.05 * (attempt + 1))


def _is_unique_violation(err: Exception) -> bool:
    """Whether an MLflow error is a database's unique-constraint failure (sqlite, PostgreSQL, MySQL wording)."""
    text = str(err).lower()
    return any(word in text for word in ("unique constraint", "integrityerror", "duplicate key", "duplicate entry"))


def _best_from_tag(text, key: str) -> float | None:
    """The lowest value of `key` recorded in a run's `lightning_scaling.best` tag, or None when the tag is absent or
    does not hold a finite number for it (then the metric history is read instead)."""
    if not text:
        return None
    try:
        value = json.loads(text).get(key)
    except (ValueError, AttributeError):
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if number and math.isfinite(value) else None


def _json_default(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "to_dict"):
        return x.to_dict()
    return str(x)
