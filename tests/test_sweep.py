"""`lightning-scaling sweep`'s loop, fast: the real planner, MLflow store (sqlite), state, resume-or-retry and refits,
with an executor that "trains" each job in-process by logging the metrics a run of that size would log under a known
law (no torch). The slow tests in test_sweep_training.py run the same paths with real training processes.

What a plausible bug changes, each pinned here: a run trained twice (a re-run that ignores the store), a failed run
retried without end or not at all, a resume that starts a new MLflow run (or a retry that keeps the failed one), the
compute of a stopped run counted as spent by the fit or not given back, bad input found after something ran.
"""

from __future__ import annotations

import json
import re
import time

import mlflow
import pytest

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.executors import Executor, Handle, Outcome, Resources, make_executor
from lightning_scaling.executors.registry import BUILTIN_EXECUTORS
from lightning_scaling.law import CHINCHILLA_PAPER_LAW
from lightning_scaling.runs import (
    COMPLETE_TAG,
    FLOPS,
    PARAMS_AVG,
    SCHEMA_TAG,
    SCHEMA_VERSION,
    STOPPED_EARLY_TAG,
    SWEEP_ATTEMPTS_TAG,
    SWEEP_LEFT_OUT_TAG,
    TOKENS,
)
from lightning_scaling.sweep import MAX_ATTEMPTS, Sweep, load_sweep_config
from lightning_scaling.sweep.jobs import RunFiles

FAMILY = "examples/tiny_gpt/config.yaml"


def _arg(argv, name):
    for a in argv:
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    i = argv.index(name)
    return argv[i + 1]


class _Done(Handle):
    def __init__(self, job, outcome):
        self.job, self._outcome = job, outcome

    def done(self):
        return True

    def outcome(self):
        return self._outcome


class LawExecutor(Executor):
    """Trains a job by logging, into its MLflow run, what a run of its planned size reaches under Chinchilla's law
    (3x the published scale in D: the tiny runs' losses); `faults` maps a run-name pattern to what goes wrong, in
    order, one per start: "raise" (the run ends FAILED, no checkpoint), "kill" (SIGKILL: the run stays RUNNING, its
    checkpoint left), "kill-nockpt", "stop" (LossForecast stops it as hopeless at half its compute), "interrupt"
    (the sweep's own process is interrupted while the job runs)."""

    name = "law"

    def __init__(self, uri, faults=None):
        self.client = mlflow.MlflowClient(uri)
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.started: list[str] = []
        self.bound: dict[str, str | None] = {}
        self.always = None

    def submit(self, jobs):
        return [_Done(job, self._train(job)) for job in jobs]

    def _fault(self, name):
        """The next fault of the first run whose name matches a pattern (one run per pattern); `always` for
        every run."""
        if self.always:
            return self.always
        for pattern, left in self.faults.items():
            if pattern not in self.bound and re.search(pattern, name):
                self.bound[pattern] = name
            if self.bound.get(pattern) == name and left:
                return left.pop(0)
        return None

    def _train(self, job):
        argv = list(job.argv)
        run_id = _arg(argv, "--trainer.logger.init_args.run_id")
        run = self.client.get_run(run_id)
        plan = json.loads(run.data.tags["lightning_scaling.sweep.plan"])
        self.started.append(run.info.run_name)
        fault = self._fault(run.info.run_name)
        if fault == "interrupt":
            raise KeyboardInterrupt
        self.client.update_run(run_id, status="RUNNING")
        share = 0.5 if fault in ("kill", "kill-nockpt", "stop") else 1.0
        n, d = float(plan["params"]), float(plan["tokens"]) * share
        loss = float(CHINCHILLA_PAPER_LAW.loss(n, 3 * d))
        now = int(time.time() * 1000)
        for key, value in ((PARAMS_AVG, n), (TOKENS, d), (FLOPS, 6 * n * d), ("val_loss", loss)):
            self.client.log_metric(run_id, key, value, now)
        self.client.set_tag(run_id, SCHEMA_TAG, SCHEMA_VERSION)
        if fault in ("kill", "kill-nockpt"):
            if fault == "kill":
                ckpt = RunFiles(_arg(argv, "--checkpoint-dir").rsplit("/runs/", 1)[0], run.info.run_name).checkpoints
                ckpt.mkdir(parents=True, exist_ok=True)
                (ckpt / "last.ckpt").write_text("checkpoint")
            return Outcome(job.name, -9, 0.1, "killed by SIGKILL")
        if fault == "raise":
            self.client.set_terminated(run_id, "FAILED")
            return Outcome(job.name, 1, 0.1, "exit status 1")
        if fault == "stop":
            self.client.set_tag(run_id, STOPPED_EARLY_TAG, "hopeless: forecast above the law's prediction")
        self.client.set_tag(run_id, COMPLETE_TAG, "true")
        self.client.set_terminated(run_id, "FINISHED")
        return Outcome(job.name, 0, 0.1)


@pytest.fixture
def sweep_config(tmp_path, monkeypatch):
    """A quick plan of the example family (the prior's first stage, then the fit's), into a fresh sqlite store."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the family's module path, as a user runs it from the repository
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def make(**given):
        text = (f"sweep:\n  family: {root / FAMILY}\n  target_flops: 1e13\n  budget: 2.5e12\n"
                f"  tracking_uri: {uri}\n  experiment: law\n  folder: {tmp_path / 'sweep'}\n"
                "  plugins: [examples.tiny_gpt.WidthFamily]\n  overrides: [--data.init_args.batch_size=8]\n"
                "  plan: {first_share: 0.4, first_groups: 3, group_size: 5, min_steps: 391, bootstrap: 50}\n")
        path = tmp_path / "sweep.yaml"
        path.write_text(text)
        return load_sweep_config(path, **given)

    return uri, make


def _sweep(config, executor, lines=None):
    sweep = Sweep(config, executor, out=(lines.append if lines is not None else lambda _: None))
    try:
        return sweep.run()
    finally:
        sweep.planner.close()


def _runs(uri, experiment="law"):
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if "lightning_scaling.sweep.stage" in r.data.tags]


def test_a_sweep_plans_stages_until_the_budget_is_spent_and_a_rerun_trains_nothing(sweep_config):
    uri, make = sweep_config
    config = make()
    lines: list[str] = []
    ex = LawExecutor(uri)
    result = _sweep(config, ex, lines)
    runs = _runs(uri)
    assert result.stages >= 2  # the prior's stage, then at least one the fit chose
    assert len(runs) == len(ex.started) == result.trained_now == len(result.finished)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({r.info.run_name for r in runs}) == len(runs)
    assert result.spent <= config.budget * 1.001  # the planner's budget holds (C = 6ND of each run)
    assert result.recommendation is not None and result.recommendation["status"] == "ok"
    assert sum("finished " in line and " stage " in line for line in lines) == len(runs)  # one line per run
    assert any("budget:" in line and "%" in line for line in lines)
    # a refit once per stage: the summary run's recommendation holds every run
    summary = [r for r in mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("law").experiment_id],
        filter_string="tags.`lightning_scaling.summary` = 'true'")]
    assert len(summary) == 1 and int(summary[0].data.tags["lightning_scaling.n_runs"]) == len(runs)

    again = LawExecutor(uri)
    result2 = _sweep(config, again)
    assert again.started == [] and result2.trained_now == 0 and len(_runs(uri)) == len(runs)


def test_a_failed_run_is_restarted_once_then_left_out_and_the_sweep_goes_on(sweep_config):
    uri, make = sweep_config
    ex = LawExecutor(uri, faults={r"^s1-.*N1\.07e\+04$": ["raise"], r"^s1-.*N3\.37e\+04$": ["raise", "raise"]})
    result = _sweep(make(), ex)
    runs = _runs(uri)
    restarted = [r for r in runs if re.search(r"^s1-.*N1\.07e\+04$", r.info.run_name)]
    assert restarted and all(r.info.status == "FINISHED" for r in restarted)
    assert all(r.data.tags[SWEEP_ATTEMPTS_TAG] == "2" for r in restarted[:1])
    given_up = [r for r in runs if r.data.tags.get(SWEEP_LEFT_OUT_TAG)]
    assert len(given_up) >= 1 and all(r.info.status == "FAILED" for r in given_up)
    assert all(f"failed {MAX_ATTEMPTS} times" in r.data.tags[SWEEP_LEFT_OUT_TAG] for r in given_up)
    assert {r.info.run_name for r in given_up} == {r.name for r in result.left_out}
    # the retried run's failed first attempt, with its partial metrics, was deleted: one run per name
    names = [r.info.run_name for r in runs]
    assert len(names) == len(set(names))
    assert result.stages >= 2  # the sweep went on past the failures


def test_a_killed_run_resumes_from_its_checkpoint_under_the_same_run_id(sweep_config):
    uri, make = sweep_config
    ex = LawExecutor(uri, faults={r"^s1-.*N6\.89e\+04$": ["kill"], r"^s1-.*N1\.16e\+05$": ["kill-nockpt"]})
    _sweep(make(), ex)
    runs = _runs(uri)
    resumed = [r for r in runs if re.search(r"^s1-.*N6\.89e\+04$", r.info.run_name)]
    assert resumed and all(r.info.status == "FINISHED" for r in resumed)
    first = resumed[0].info.run_name
    assert ex.started.count(first) == 2  # started twice, one MLflow run: resumed under the same id
    assert sum(r.info.run_name == first for r in runs) == 1
    assert resumed[0].data.tags[SWEEP_ATTEMPTS_TAG] == "2"
    restarted = [r for r in runs if re.search(r"^s1-.*N1\.16e\+05$", r.info.run_name)]
    assert restarted and restarted[0].data.tags[SWEEP_ATTEMPTS_TAG] == "2"


def test_an_interrupted_sweep_goes_on_where_it_stopped(sweep_config):
    uri, make = sweep_config
    config = make()
    first = LawExecutor(uri, faults={r"^s1-.*N3\.37e\+04$": ["interrupt"]})
    with pytest.raises(KeyboardInterrupt):
        _sweep(config, first)
    done_before = {r.info.run_name for r in _runs(uri) if r.info.status == "FINISHED"}
    assert done_before  # some of the stage had finished
    second = LawExecutor(uri)
    _sweep(config, second)
    assert not done_before & set(second.started)  # no run trained twice
    runs = _runs(uri)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({r.info.run_name for r in runs}) == len(runs)


def test_a_stopped_runs_unspent_compute_goes_back_to_the_budget(sweep_config):
    uri, make = sweep_config
    ex = LawExecutor(uri, faults={r"^s1-.*N1\.07e\+04$": ["stop"]})
    result = _sweep(make(), ex)
    stopped = [r for r in _runs(uri) if r.data.tags.get(STOPPED_EARLY_TAG)]
    assert len(stopped) == 1
    plan = json.loads(stopped[0].data.tags["lightning_scaling.sweep.plan"])
    spent = stopped[0].data.metrics[FLOPS]
    assert result.saved == pytest.approx(plan["flops"] - spent, rel=1e-9)
    assert result.saved > 0.4 * plan["flops"]
    assert result.spent <= make().budget * 1.001


def test_bad_input_stops_before_anything_is_submitted(sweep_config, tmp_path, monkeypatch):
    uri, make = sweep_config
    with pytest.raises(ConfigurationError, match=r"unknown key\(s\) \['workerz'\]"):
        (tmp_path / "bad.yaml").write_text(f"sweep:\n  family: {FAMILY}\n  workerz: 2\n")
        load_sweep_config(tmp_path / "bad.yaml", target_flops=1e13, budget=1e12)
    with pytest.raises(ConfigurationError, match="sweep.budget is missing"):
        load_sweep_config(FAMILY, target_flops=1e13)
    with pytest.raises(ConfigurationError, match="must be below sweep.target_flops"):
        make(budget=1e14)
    with pytest.raises(ConfigurationError, match=r"--executor must be one of \['local', 'slurm', 'ray'"):
        make_executor("pbs", Resources(), tmp_path)
    monkeypatch.setitem(BUILTIN_EXECUTORS, "slurm", ("x", "y", "a_package_that_is_not_there", "slurm"))
    with pytest.raises(ConfigurationError, match=r"pip install 'lightning-scaling\[slurm\]'"):
        make_executor("slurm", Resources(), tmp_path)
    ex = LawExecutor(uri)
    with pytest.raises(ConfigurationError, match="below what the family's cheapest runs need"):
        _sweep(make(budget=1e8), ex)
    assert ex.started == []
    (tmp_path / "nomodel.yaml").write_text("trainer: {max_steps: 10}\n")
    with pytest.raises(ConfigurationError, match="model.init_args"):
        _sweep(load_sweep_config(tmp_path / "nomodel.yaml", target_flops=1e13, budget=1e12), ex)


def test_train_target_trains_the_recommended_run_once_and_compares_it_with_the_interval(sweep_config):
    uri, make = sweep_config
    config = make(train_target=True)
    ex = LawExecutor(uri)
    result = _sweep(config, ex)
    rec, target = result.recommendation, result.target
    assert target is not None and target["name"].startswith("target-")
    assert target["predicted"]["loss"] == rec["loss"] and target["predicted"]["loss_low"] == rec["loss_low"]
    # the achieved loss is the run's own (the law executor logs the law's loss at its planned size and tokens)
    want = float(CHINCHILLA_PAPER_LAW.loss(float(target["params"]), 3 * float(target["tokens"])))
    assert target["achieved"] == pytest.approx(want, rel=1e-9)
    assert target["tokens"] >= rec["tokens"]  # whole steps covering the recommended tokens
    from lightning_scaling.sweep.target import target_text

    text = target_text(target, target["achieved"])
    assert f"achieved {target['achieved']:.4f}" in text and ("inside" in text or "OUTSIDE" in text)
    again = LawExecutor(uri)
    result2 = _sweep(config, again)
    assert again.started == [] and result2.target["run_id"] == target["run_id"]


def test_a_plugin_registers_an_executor_and_cannot_take_a_built_in_name(tmp_path):
    from lightning_scaling import plugins
    from lightning_scaling.executors import executor_names
    from lightning_scaling.plugins import hookimpl

    class Engines:
        def __init__(self, name):
            self.name = name

        @hookimpl
        def register_executors(self, register):
            register(self.name, lambda resources, folder, **options: LawExecutor("sqlite://", **options))

    pm = plugins.plugin_manager()
    plugin = Engines("law")
    pm.register(plugin, name="test-engines")
    try:
        assert executor_names() == ["local", "slurm", "ray", "law"]
        ex = make_executor("law", Resources(), tmp_path, {"faults": {"x": ["raise"]}})
        assert isinstance(ex, LawExecutor) and ex.faults == {"x": ["raise"]}
        with pytest.raises(ConfigurationError, match="sweep.law"):
            make_executor("law", Resources(), tmp_path, {"no_such_option": 1})
    finally:
        pm.unregister(plugin)
    clash = Engines("slurm")
    pm.register(clash, name="test-clash")
    try:
        with pytest.raises(ConfigurationError, match=r"executor name\(s\) \['slurm'\], which are built in"):
            executor_names()
    finally:
        pm.unregister(clash)


def test_local_workers_default_to_the_cores_or_gpus_and_each_gets_its_own_devices(tmp_path, monkeypatch):
    import sys

    from lightning_scaling.executors import Job, LocalExecutor, default_workers

    assert default_workers(Resources(cpus=1, gpus=1), gpus=["0", "1", "2", "3"]) == 4
    assert default_workers(Resources(cpus=1, gpus=2), gpus=["0", "1", "2", "3"]) == 2
    cores = len(__import__("os").sched_getaffinity(0))
    assert default_workers(Resources(cpus=1), gpus=[]) == cores
    assert default_workers(Resources(cpus=cores + 5), gpus=[]) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with pytest.raises(ConfigurationError, match="need 4 GPUs; this machine has 2"):
        LocalExecutor(workers=2, resources=Resources(gpus=2))
    code = ("import os, sys, time; time.sleep(0.3); "
            "open(sys.argv[1], 'w').write(os.environ['CUDA_VISIBLE_DEVICES'] + ' ' + os.environ['OMP_NUM_THREADS'])")
    with LocalExecutor(resources=Resources(cpus=3, gpus=1)) as ex:
        assert ex.workers == 2
        jobs = [Job(f"j{i}", (sys.executable, "-c", code, str(tmp_path / f"j{i}")), str(tmp_path / f"j{i}.log"),
                    resources=Resources(cpus=3, gpus=1)) for i in range(2)]
        assert all(h.outcome().ok for h in ex.submit(jobs))
    seen = sorted((tmp_path / f"j{i}").read_text() for i in range(2))
    assert seen == ["3 3", "5 3"]  # one device each, and the run's CPUs as its threads


def test_a_stage_whose_runs_all_fail_stops_the_sweep_instead_of_planning_it_again(sweep_config):
    uri, make = sweep_config
    ex = LawExecutor(uri)
    ex.always = "raise"
    lines: list[str] = []
    result = _sweep(make(), ex, lines)
    runs = _runs(uri)
    assert result.stages == 1 and runs and all(r.data.tags.get(SWEEP_LEFT_OUT_TAG) for r in runs)
    assert len(ex.started) == MAX_ATTEMPTS * len(runs)  # each started twice, then left out; no second plan
    assert any("no run of stage 1 finished" in line for line in lines)
