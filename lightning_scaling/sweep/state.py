"""A sweep's state, kept in the run store: each planned run is an MLflow run tagged with its stage and plan.

The sweep writes nothing else it needs to go on. When its process dies (a killed terminal, a lost login node) and the
same command runs again, `SweepState.runs()` reads back every run it planned: the finished ones are skipped, the
ones still training elsewhere are waited for, and the others are resumed or retried. So no run is trained twice and
none is lost.

A planned run is created ``SCHEDULED`` before its job is submitted; `lightning-scaling train` then logs into that
same run (``--trainer.logger.init_args.run_id``), which MLflow shows ``RUNNING`` and Lightning ends ``FINISHED``.
The process training it tags the run with ``host:pid`` (`runs.schema.PROCESS_TAG`), so a re-run on the same machine
tells a live run from one whose process is gone without waiting for it to go stale.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field

from lightning_scaling.runs.records import STALE_AFTER_S
from lightning_scaling.runs.schema import (
    FLOPS,
    PROCESS_TAG,
    STOPPED_EARLY_TAG,
    SWEEP_ATTEMPTS_TAG,
    SWEEP_LEFT_OUT_TAG,
    SWEEP_LOG_TAG,
    SWEEP_PLAN_TAG,
    SWEEP_STAGE_TAG,
    TOKENS,
)

__all__ = ["SweepRun", "SweepState"]

ENDED = ("FINISHED", "FAILED", "KILLED")


@dataclass
class SweepRun:
    """One planned run of the sweep as the store holds it."""

    run_id: str
    name: str
    stage: int
    plan: dict
    status: str
    attempts: int = 1
    left_out: str | None = None
    metrics: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    start_time: int | None = None

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"

    @property
    def settled(self) -> bool:
        """Nothing more to do for it: finished, or left out with its reason."""
        return self.finished or self.left_out is not None

    @property
    def stopped_early(self) -> str | None:
        return self.tags.get(STOPPED_EARLY_TAG) or None

    @property
    def spent_flops(self) -> float:
        """The compute it spent (its `scaling/flops`; 0 before its first log)."""
        return float(self.metrics.get(FLOPS, 0.0) or 0.0)


class SweepState:
    """The sweep's runs in the MLflow experiment `experiment` at `tracking_uri` (created when missing).

    Args:
        stale_after: seconds without a new metric after which a RUNNING run trained on another machine is taken for
            dead (on this machine its process is checked directly).
    """

    def __init__(self, tracking_uri: str, experiment: str, stale_after: float = STALE_AFTER_S):
        from mlflow import MlflowClient

        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self._create_experiment(experiment)
        self.stale_after = stale_after

    def _create_experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name)
        except MlflowException:  # created by another process meanwhile
            return self.client.get_experiment_by_name(name).experiment_id

    # -- reading ------------------------------------------------------------------------------------------------
    def runs(self) -> list[SweepRun]:
        """Every run the sweep planned in this experiment, oldest first."""
        from mlflow.entities import ViewType

        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{SWEEP_STAGE_TAG}` != ''",
                                           run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                           order_by=["attributes.start_time ASC"], page_token=token)
            out.extend(_sweep_run(r) for r in page)
            token = page.token
            if not token:
                return out

    def get(self, run_id: str) -> SweepRun:
        return _sweep_run(self.client.get_run(run_id))

    def alive(self, run: SweepRun) -> bool:
        """Whether a RUNNING run is still being trained: its process, when it runs on this machine; else a metric
        logged within `stale_after` seconds."""
        if run.status != "RUNNING":
            return False
        host, _, pid = (run.tags.get(PROCESS_TAG) or "").rpartition(":")
        if host == socket.gethostname() and pid.isdigit():
            return _pid_alive(int(pid))
        stamps = [m.timestamp for m in self.client.get_metric_history(run.run_id, TOKENS)]
        last = max(stamps, default=run.start_time or 0) / 1000.0
        return time.time() - last < self.stale_after

    # -- writing ------------------------------------------------------------------------------------------------
    def create(self, planned: dict, stage: int, attempts: int = 1) -> SweepRun:
        """A new run for `planned` (a run of the stage's plan), SCHEDULED until its job starts."""
        tags = {SWEEP_STAGE_TAG: str(stage), SWEEP_PLAN_TAG: json.dumps(planned, default=str),
                SWEEP_ATTEMPTS_TAG: str(attempts)}
        run = self.client.create_run(self.experiment_id, run_name=planned["name"], tags=tags)
        self.client.update_run(run.info.run_id, status="SCHEDULED")
        return self.get(run.info.run_id)

    def attempt(self, run: SweepRun) -> SweepRun:
        """Count one more start of `run` (a resume from its checkpoint under the same run id)."""
        self.client.set_tag(run.run_id, SWEEP_ATTEMPTS_TAG, str(run.attempts + 1))
        return self.get(run.run_id)

    def replace(self, run: SweepRun, counted: bool = True) -> SweepRun:
        """Start `run` again from nothing: a new run with the same plan (one more attempt when `counted`); the
        failed one, which left no checkpoint to resume, is deleted so that its partial metrics join no fit."""
        self.client.delete_run(run.run_id)
        return self.create(run.plan, run.stage, attempts=run.attempts + (1 if counted else 0))

    def leave_out(self, run: SweepRun, reason: str) -> SweepRun:
        """Give up on `run` with `reason` (tag), ended FAILED: the fit leaves it out and the sweep goes on."""
        self.client.set_tag(run.run_id, SWEEP_LEFT_OUT_TAG, reason)
        if run.status not in ENDED:
            self.client.set_terminated(run.run_id, "FAILED")
        return self.get(run.run_id)

    def attach_log(self, run: SweepRun, path) -> None:
        """Attach the run's training log (`path`) as ``logs/<name>`` and say so in a tag; again after a resume,
        whose output the file gathers too."""
        from pathlib import Path

        self.client.log_artifact(run.run_id, str(path), "logs")
        self.client.set_tag(run.run_id, SWEEP_LOG_TAG, f"logs/{Path(path).name}")


def _sweep_run(run) -> SweepRun:
    tags = run.data.tags
    return SweepRun(run_id=run.info.run_id, name=run.info.run_name, stage=int(tags.get(SWEEP_STAGE_TAG, 0)),
                    plan=json.loads(tags.get(SWEEP_PLAN_TAG) or "{}"), status=run.info.status,
                    attempts=int(tags.get(SWEEP_ATTEMPTS_TAG, 1)), left_out=tags.get(SWEEP_LEFT_OUT_TAG) or None,
                    metrics=dict(run.data.metrics), tags=dict(tags), start_time=run.info.start_time)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
