"""The sweep: plan a stage from the runs in the store, train its runs on an executor, refit, and plan the next, until
the planner says the budget is spent; then recommend the target run (and, when asked, train it).

`Sweep(config, executor).run()` is `lightning-scaling sweep`. Its state is the run store's (`sweep.state`): run the
same command again after any interruption and it goes on where it stopped. A run that fails is resumed once from
its checkpoint under the same MLflow run id when it left one, else started once more from nothing; a second failure
leaves it out with its reason and the sweep goes on with the others. The closing hook of each run defers to the
sweep (`ScalingLawAdvisor` sees the run's sweep tag), which refits once per finished stage instead.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.executors import Executor, Handle, Outcome, Resources
from lightning_scaling.runs.schema import SWEEP_LOG_TAG
from lightning_scaling.sweep.console import progress_line, run_line
from lightning_scaling.sweep.jobs import RunFiles, job_for
from lightning_scaling.sweep.planning import SweepPlanner
from lightning_scaling.sweep.state import SweepRun, SweepState
from lightning_scaling.sweep.target import TARGET_STAGE, target_run

__all__ = ["MAX_ATTEMPTS", "Sweep", "SweepResult"]

MAX_ATTEMPTS = 2  # a failed run is started once more (resumed, or from nothing), then left out
POLL_S = 0.5


@dataclass
class SweepResult:
    """What a sweep did: its runs by outcome, the compute spent and saved, the time refits took, the
    recommendation (the closing hook's dict) and, with ``train_target``, the target run's achieved loss."""

    stages: int = 0
    finished: list = field(default_factory=list)
    left_out: list = field(default_factory=list)
    trained_now: int = 0
    spent: float = 0.0
    saved: float = 0.0
    wall_s: float = 0.0
    refit_s: float = 0.0
    recommendation: dict | None = None
    target: dict | None = None
    note: str | None = None  # the summary run's note (the closing hook's recommendation)
    link: tuple | None = None  # (tracking URI, the summary run's path in the MLflow UI)


class _Watch(Handle):
    """A run a previous sweep process started and that is still training (an orphan of a killed sweep, or a job
    still queued on a cluster): followed through the store until it ends."""

    def __init__(self, state: SweepState, run: SweepRun):
        self.state, self.run, self._checked, self._start = state, run, 0.0, time.monotonic()
        self.job = None

    def done(self) -> bool:
        if time.monotonic() - self._checked < 2.0:
            return False
        self._checked = time.monotonic()
        self.run = self.state.get(self.run.run_id)
        return self.run.status != "RUNNING" or not self.state.alive(self.run)

    def outcome(self) -> Outcome:
        ok = self.run.finished
        return Outcome(self.run.name, 0 if ok else None, time.monotonic() - self._start,
                       None if ok else f"its process ended with the run {self.run.status}")


class Sweep:
    """Plan, train and refit until the budget is spent (module docstring).

    Args:
        config: the sweep's settings (`sweep.config.SweepConfig`).
        executor: where the runs train.
        out: where the sweep's lines go (default `print`, flushed).
    """

    def __init__(self, config, executor: Executor, out: Callable[[str], None] | None = None):
        self.config, self.executor = config, executor
        self.out = out or (lambda line: print(line, flush=True))
        self.planner = SweepPlanner(config)
        self.config = config = self.planner.config_for()
        self.state = SweepState(self.planner.tracking_uri, self.planner.experiment)
        self.resources = Resources(cpus=config.cpus_per_run, gpus=config.gpus_per_run)
        self.result = SweepResult()

    def run(self) -> SweepResult:
        start = time.perf_counter()
        c = self.config
        self.out(f"lightning-scaling sweep: experiment '{self.planner.experiment}' at {self.planner.tracking_uri}, "
                 f"executor {self.executor.name}; sizing a run of {c.target_flops:.3g} FLOPs with {c.budget:.3g} "
                 f"FLOPs of small runs")
        self.executor.check([], self.planner.tracking_uri)  # the engine's settings, before any run is planned
        try:
            while True:
                runs = [r for r in self.state.runs() if r.stage > 0]
                pending = [r for r in runs if not r.settled]
                if pending:
                    stage = max(r.stage for r in pending)
                    pending = [r for r in pending if r.stage == stage]
                    self.out(f"\nStage {stage}: {len(pending)} run(s) of a stage planned before still to train")
                else:
                    stage, pending = self._plan_stage(runs)
                    if not pending:
                        break
                self._train_stage(stage, pending)
                self.result.stages = max(self.result.stages, stage)
                if not any(r.finished for r in self.state.runs() if r.stage == stage):
                    # every run of the stage failed twice: planning again would only plan the same runs
                    self.out(f"\nno run of stage {stage} finished (each failed twice; their logs are in "
                             f"{self.config.run_folder() / 'runs'}): the sweep stops here; fix the cause and run the "
                             "same command again")
                    break
        except KeyboardInterrupt:
            self.out("\ninterrupted: run the same command again to go on where the sweep stopped")
            raise
        self._close(start)
        self.result.wall_s = time.perf_counter() - start  # the sweep's own time, the target run's apart
        if self.config.train_target:
            self._train_target()
        return self.result

    def _train_target(self) -> None:
        """Train the recommended run once: a sweep run again finds its target run (resumes it when unfinished,
        reports it when finished) rather than sizing a new one from a refit that now includes it."""
        t0 = time.perf_counter()
        found = [r for r in self.state.runs() if r.stage == TARGET_STAGE]
        if found:
            run = found[-1]
        else:
            rec = self.result.recommendation or self.planner.latest_recommendation()
            planned = target_run(rec, self.planner.family["tokens_per_step"], self.config.target_steps_max)
            run = self.state.create(planned, TARGET_STAGE)
        trained = not run.settled
        if trained:
            self.out(f"\nTraining the recommended run {run.name}: {run.plan['steps']} steps of "
                     f"{run.plan['architecture']}")
            self._train_stage(TARGET_STAGE, [run], publish=False)
        run = self.state.get(run.run_id)
        achieved = run.metrics.get(self.planner.loss_key) if run.finished else None
        self.result.target = {**run.plan, "achieved": achieved, "run_id": run.run_id,
                              "seconds": time.perf_counter() - t0 if trained else None}

    # -- stages ---------------------------------------------------------------------------------------------------
    def _plan_stage(self, runs: list[SweepRun]) -> tuple[int, list[SweepRun]]:
        t0 = time.perf_counter()
        plan = self.planner.next_stage(runs)
        self.result.refit_s += time.perf_counter() - t0
        stage = max((r.stage for r in runs), default=0) + 1
        self.out("\n" + re.sub(r"^Stage \d+:", f"Stage {stage}:", plan["sentence"]))
        if plan["done"] or not plan["runs"]:
            return 0, []
        names = {r.name for r in runs}
        created = []
        for planned in self.planner.stage_runs(plan, stage):
            while planned["name"] in names:  # the planner may name a run of an earlier stage again
                planned = {**planned, "name": planned["name"] + "-b"}
            names.add(planned["name"])
            created.append(self.state.create(planned, stage))
        return stage, created

    def _train_stage(self, stage: int, runs: list[SweepRun], publish: bool = True) -> None:
        total, done = len(runs), 0
        handles: dict[Handle, SweepRun] = {}
        starting = []
        for run in runs:
            if self.state.alive(run):
                self.out(f"  {run.name}: still training (started before): waiting for it")
                handles[_Watch(self.state, run)] = run
            else:
                starting.append(self._prepared(run, counted=False))
        handles.update(self._submit([r for r in starting if r is not None]))
        while handles:
            finished = [h for h in handles if h.done()]
            if not finished:
                time.sleep(POLL_S)
                continue
            for handle in finished:
                run = handles.pop(handle)
                retry = self._settle(handle, run)
                if retry is not None:
                    handles.update(self._submit([retry]))
                    continue
                done += 1
                self.out(progress_line(stage, done, total, self.planner.spent(self.state.runs()), self.config.budget))
        if publish:
            self.publish(stage)

    def _settle(self, handle: Handle, run: SweepRun) -> SweepRun | None:
        """Record how `run` ended; return it again when it is to be restarted."""
        outcome = handle.outcome()
        run = self.state.get(run.run_id)
        self._attach_log(run)
        if run.finished:
            self.result.trained_now += run.stage != TARGET_STAGE
            self.out(run_line(run, outcome.seconds, self.planner.loss_key,
                              "stopped" if run.stopped_early else "finished"))
            return None
        reason = outcome.error or f"the run ended {run.status}"
        return self._prepared(run, counted=True, reason=reason)

    def _attach_log(self, run: SweepRun) -> None:
        files = RunFiles(self.config.run_folder(), run.name)
        if files.log.exists():
            try:
                self.state.attach_log(run, files.log)
            except Exception as err:  # the log is a convenience: never fail the sweep over it
                self.out(f"  (could not attach the log of {run.name}: {err})")

    def _prepared(self, run: SweepRun, counted: bool, reason: str | None = None) -> SweepRun | None:
        """`run` made ready to start: as planned, resumed from its checkpoint, or started again from nothing; None
        when it has failed `MAX_ATTEMPTS` times (it is left out). `counted`: a failure seen by this sweep (one
        found dead when a sweep starts again, e.g. killed with it, is resumed without counting)."""
        files = RunFiles(self.config.run_folder(), run.name)
        never_started = run.status == "SCHEDULED" and not counted
        if never_started:
            return run
        if counted and run.attempts >= MAX_ATTEMPTS:
            why = f"failed {run.attempts} times, the last: {reason} (log: {files.log})"
            self.out(f"  left out {run.name}: {why}")
            self.state.leave_out(run, why)
            return None
        if files.resumable:
            self.out(f"  resuming {run.name} from its last checkpoint" + (f" ({reason})" if reason else ""))
            return self.state.attempt(run) if counted else run
        self.out(f"  restarting {run.name} from the beginning" + (f" ({reason})" if reason else ""))
        return self.state.replace(run, counted=counted)

    def _submit(self, runs: list[SweepRun]) -> dict[Handle, SweepRun]:
        if not runs:
            return {}
        jobs = [job_for(r.plan, r.run_id, self.planner.family_for(r.plan), self.planner.config_for(),
                        self.resources) for r in runs]
        self.executor.check(jobs, self.planner.tracking_uri)
        return dict(zip(self.executor.submit(jobs), runs))

    # -- refits -----------------------------------------------------------------------------------------------------
    def publish(self, stage: int) -> None:
        """Refit over every run in the store and publish the recommendation (the closing hook's, once a stage)."""
        t0 = time.perf_counter()
        try:
            self.result.recommendation = self.planner.recommend(self.state.runs())
        except ConfigurationError as err:
            self.out(f"  no recommendation after stage {stage} yet: {err}")
        self.result.refit_s += time.perf_counter() - t0

    def _close(self, start: float) -> None:
        runs = [r for r in self.state.runs() if r.stage > 0]
        r = self.result
        r.finished = [x for x in runs if x.finished]
        for x in r.finished:  # finished while no sweep watched it (a sweep killed meanwhile): its log too
            if SWEEP_LOG_TAG not in x.tags:
                self._attach_log(x)
        r.left_out = [x for x in runs if x.left_out]
        r.spent, r.saved = self.planner.spent(runs), self.planner.saved(runs)
        if r.recommendation is None and r.finished:
            self.publish(r.stages)
        note, link = self.planner.summary_note()
        r.note, r.link = note, ((self.planner.tracking_uri, link) if link else None)
