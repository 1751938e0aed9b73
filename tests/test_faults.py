"""Faults a team's run store meets, on an MLflow server backed by PostgreSQL: a training process killed with SIGKILL
(its run left RUNNING: stale after `stale_after`, back when resumed under the same run id), the tracking server
stopped for 30 s in the middle of a run (MLflow's own HTTP retries hold the logging call until it is back: no
metric point lost, the checkpoint intact), and the server unreachable when the closing hook runs (a warning; the run
still ends FINISHED)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import mlflow
import pytest
import torch
from servers import REPO, MlflowServer, env, postgres, postgres_missing

from lightning_scaling.integrations import MLflowRunStore
from lightning_scaling.runs import COMPLETE_TAG, TOKENS

pytestmark = pytest.mark.slow
T, BATCH, LOG_EVERY = 32, 4, 5
OUTAGE_S = 30.0


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    missing = postgres_missing()
    if missing:
        pytest.skip(missing)
    tmp = tmp_path_factory.mktemp("faults")
    with postgres() as database:
        server = MlflowServer(tmp, database, workers=1).start()
        try:
            yield server
        finally:
            server.stop()


def start_training(uri: str, experiment: str, tmp: Path, steps: int, *extra: str) -> tuple[subprocess.Popen, Path]:
    out = tmp / f"report-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(REPO / "tests" / "fault_script.py"), "--uri", uri, "--experiment", experiment,
           "--steps", str(steps), "--ckpt-dir", str(tmp / "ckpt"), "--out", str(out), *extra]
    proc = subprocess.Popen(cmd, cwd=tmp, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, out


def wait_for_step(client, experiment: str, step: int, proc, timeout: float = 300.0) -> str:
    """The run id once the run's `scaling/tokens` history reaches `step`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id]) if exp else []
        for run in runs:
            history = client.get_metric_history(run.info.run_id, TOKENS)
            if history and max(m.step for m in history) >= step:
                return run.info.run_id
        time.sleep(0.5)
    raise AssertionError(f"no run reached step {step} in {timeout:.0f} s")


def finish(proc, out: Path, timeout: float = 600.0) -> dict:
    log, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, log[-4000:]
    return json.loads(out.read_text())


def logged_steps(steps: int) -> list[int]:
    return sorted(set(range(LOG_EVERY, steps + 1, LOG_EVERY)) | {steps})


def test_killed_run_is_stale_and_resuming_it_brings_it_back(pg_server, tmp_path):
    client = mlflow.MlflowClient(pg_server.uri)
    proc, _ = start_training(pg_server.uri, "killed", tmp_path, 400, "--step-sleep", "0.1")
    run_id = wait_for_step(client, "killed", 10, proc)
    while not (tmp_path / "ckpt" / "last.ckpt").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert client.get_run(run_id).info.status == "RUNNING"  # nothing closed it

    store = MLflowRunStore(pg_server.uri, experiment_name="killed", stale_after=3.0)
    excluded = dict((r.run_id, why) for r, why in store.select().excluded)
    assert excluded[run_id] == "status RUNNING: still training" or excluded[run_id].startswith("stale")
    time.sleep(4.0)
    excluded = dict((r.run_id, why) for r, why in store.select().excluded)
    assert excluded[run_id].startswith("stale: RUNNING with no new metric for "), excluded
    assert "more than 3 s" in excluded[run_id] and "resume it under the same run id" in excluded[run_id]

    # resumed under the same run id from its last checkpoint: it trains to the end and counts again
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    resumed_from_step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    proc, out = start_training(pg_server.uri, "killed", tmp_path, 40, "--step-sleep", "0",
                               "--resume-run-id", run_id, "--ckpt", str(ckpt))
    report = finish(proc, out)
    assert report["run_id"] == run_id and report["global_step"] == 40
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[COMPLETE_TAG] == "true"
    assert run.data.metrics[TOKENS] == 40 * BATCH * T  # the counters continued from the checkpoint
    selection = store.select()
    assert [r.run_id for r in selection.used] == [run_id], selection.excluded
    assert resumed_from_step >= LOG_EVERY


def test_server_stopped_for_30_s_mid_run_loses_nothing(pg_server, tmp_path):
    client = mlflow.MlflowClient(pg_server.uri)
    steps = 60
    proc, out = start_training(pg_server.uri, "outage", tmp_path, steps, "--step-sleep", "0.2")
    run_id = wait_for_step(client, "outage", 15, proc)
    pg_server.stop()
    down_at = time.monotonic()
    time.sleep(OUTAGE_S)
    assert proc.poll() is None  # training waits on the logging call; it did not crash
    pg_server.start()
    outage = time.monotonic() - down_at
    report = finish(proc, out)
    assert outage >= OUTAGE_S and report["global_step"] == steps

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run_id, TOKENS)
    assert [m.step for m in history] == logged_steps(steps)  # every point, none missing around the outage
    assert [m.value for m in history] == [s * BATCH * T for s in logged_steps(steps)]
    assert len(client.get_metric_history(run_id, "val_loss")) == steps // (4 * LOG_EVERY)
    # the checkpoint is intact: it loads, at the last step, into the model
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == steps
    from examples.tiny_gpt import TinyGPT

    TinyGPT(d_model=16, n_layer=1, n_head=2, seq_len=T, lr=3e-3).load_state_dict(state["state_dict"])
    assert report["status"] in ("insufficient_runs", "ok", "degenerate") and not report["warnings"]


def test_closing_hook_with_the_server_unreachable_still_finishes_the_run(pg_server, tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import Callback
    from test_advisor import train

    from lightning_scaling.callbacks import ScalingLawAdvisor
    from lightning_scaling.callbacks.advisor import ScalingLawAdvisorWarning

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")

    class Down(Callback):
        def on_train_end(self, trainer, pl_module):
            pg_server.stop()

    class Up(Callback):  # after the hook, so that the logger's own finalize can close the run
        def on_fit_end(self, trainer, pl_module):
            pg_server.start()

    advisor = ScalingLawAdvisor(bootstrap=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_id, trainer = train(pg_server.uri, 16, 8, callbacks=[Down(), advisor, Up()])
    assert trainer.state.finished and trainer.global_step == 8 and advisor.recommendation is None
    messages = [str(w.message) for w in caught if issubclass(w.category, ScalingLawAdvisorWarning)]
    assert messages and messages[0].startswith("ScalingLawAdvisor could not make a recommendation")
    assert mlflow.MlflowClient(pg_server.uri).get_run(run_id).info.status == "FINISHED"
