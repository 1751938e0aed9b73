"""`lightning-scaling sweep` with real training, under each executor: faults and a killed sweep lose nothing.

A one-stage plan of three tiny runs of the example GPT (one isoFLOP group; about 10 s a run). The family's config
adds `sweep_faults.FaultOnce` callbacks: one run SIGKILLs its own process after its first checkpoints (it must be
resumed from its checkpoint under the same MLflow run id), one raises at its start (it must be started again). Under
`local`, the sweep process itself is SIGKILLed once a run has finished, and the same command run again must finish
the stage without training any run twice. Under `slurm` (a real single-node cluster) and `ray` (a real local
cluster), one run is SIGKILLed and resumed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import ray_cluster as cluster
import yaml

from lightning_scaling.runs import SWEEP_ATTEMPTS_TAG, SWEEP_LEFT_OUT_TAG, TOKENS

pytestmark = pytest.mark.slow
ray_cluster = cluster.ray_cluster  # the module's one Ray cluster (tests/ray_cluster.py): its address

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--data.init_args.seq_len=32", "--model.init_args.seq_len=32", "--data.init_args.batch_size=8",
         "--data.init_args.val_windows=16", "--data.init_args.max_bytes=400000", "--trainer.limit_val_batches=4",
         "--trainer.enable_model_summary=false"]


def _family(tmp: Path, faults: list[dict]) -> Path:
    config = yaml.safe_load((REPO / "examples/tiny_gpt/config.yaml").read_text())
    for fault in faults:
        config["trainer"]["callbacks"].insert(0, {"class_path": "sweep_faults.FaultOnce", "init_args": fault})
    path = tmp / "family.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _sweep_yaml(tmp: Path, faults: list[dict], executor: str = "local", engine: dict | None = None) -> Path:
    sweep = {"family": str(_family(tmp, faults)), "target_flops": 1e12, "budget": 3.4e10, "executor": executor,
             "workers": 2, "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "faults",
             "folder": str(tmp / "sweep"), "overrides": SMALL, "plugins": ["examples.tiny_gpt.WidthFamily"],
             "module_path": [str(REPO), str(REPO / "tests")],
             "plan": {"first_share": 0.9, "first_groups": 1, "group_size": 3, "min_steps": 100, "bootstrap": 20}}
    if engine:
        sweep[executor] = engine
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump({"sweep": sweep}))
    return path


def _planned(tmp: Path) -> list:
    if not (tmp / "mlflow.db").exists():
        return []
    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("faults")
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id], max_results=100)
            if "lightning_scaling.sweep.stage" in r.data.tags]


def _check_nothing_lost(tmp: Path, runs: list) -> None:
    names = [r.info.run_name for r in runs]
    assert len(runs) == 3 and len(set(names)) == 3, names  # one MLflow run per planned run
    for r in runs:
        assert r.info.status == "FINISHED" or r.data.tags.get(SWEEP_LEFT_OUT_TAG), (r.info.run_name, r.info.status)
        plan = yaml.safe_load(r.data.tags["lightning_scaling.sweep.plan"])
        assert r.data.metrics[TOKENS] == pytest.approx(plan["tokens"])  # trained to its planned length


def _assert_resumed(tmp: Path, run) -> None:
    """Started twice, one MLflow run, and its token count logged at each step once: the second start went on from
    the checkpoint (a start from nothing would log the early steps again)."""
    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(run.info.run_id, TOKENS)]
    assert steps == sorted(set(steps)), steps
    log = _log(tmp, run.info.run_name)
    assert log.count("Seed set to") == 2
    assert "Restoring states from the checkpoint" in log or "Restored all states from the checkpoint" in log, log


def _log(tmp: Path, name: str) -> str:
    return (tmp / "sweep" / "runs" / name / "train.log").read_text(errors="replace")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_local_sweep_survives_a_killed_run_a_raising_run_and_its_own_kill(tmp_path):
    faults = [{"kind": "kill", "step": 150, "marker": str(tmp_path / "killed"), "d_model": 32},
              {"kind": "raise", "step": 3, "marker": str(tmp_path / "raised"), "d_model": 16}]
    config = _sweep_yaml(tmp_path, faults)
    cmd = [str(Path(sys.executable).parent / "lightning-scaling"), "sweep", "--config", str(config)]
    sweep = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and sweep.poll() is None:  # the sweep is killed once a run has finished
        time.sleep(0.5)
        try:  # the store may still be being created by the sweep (its tables, its experiment)
            if any(r.info.status == "FINISHED" for r in _planned(tmp_path)):
                break
        except Exception:
            continue
    assert sweep.poll() is None, sweep.stdout.read()
    sweep.kill()  # SIGKILL: no clean-up; its local workers go on as orphans or die with it
    first_out = sweep.communicate()[0]
    finished_before = {r.info.run_name for r in _planned(tmp_path) if r.info.status == "FINISHED"}

    again = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    out = again.stdout + again.stderr
    assert again.returncode == 0, first_out + out
    runs = _planned(tmp_path)
    _check_nothing_lost(tmp_path, runs)
    for name in finished_before:  # a run finished before the kill is not trained again
        assert _log(tmp_path, name).count("`Trainer.fit` stopped") == 1
        assert f"finished  {name}" not in out
    killed = next(r for r in runs if r.info.run_name.endswith("N3.37e+04"))
    assert (tmp_path / "killed").exists() and killed.info.status == "FINISHED"
    _assert_resumed(tmp_path, killed)
    raised = next(r for r in runs if r.info.run_name.endswith("N1.07e+04"))
    assert (tmp_path / "raised").exists() and raised.info.status == "FINISHED"
    assert "a fault injected by the test" in _log(tmp_path, raised.info.run_name)
    assert "sweep finished" in out and "3 runs finished" in out
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for r in runs:  # each run's own output is attached to it, not printed by the sweep
        assert [a.path for a in client.list_artifacts(r.info.run_id, "logs")] == ["logs/train.log"]
    assert "Epoch 0" not in out and "GPU available" not in out
    # the closing hook of a sweep's run defers to the sweep, which refits once the stage has finished
    notes = [r.data.tags.get("mlflow.note.content", "") for r in runs]
    assert any("belongs to a `lightning-scaling sweep`" in n for n in notes), notes


def _in_process_sweep(config: Path, tmp: Path, monkeypatch):
    from lightning_scaling.sweep import load_sweep_config, run_sweep

    monkeypatch.chdir(tmp)
    lines: list[str] = []
    result = run_sweep(load_sweep_config(config), out=lines.append)
    return result, "\n".join(lines)


def _sweep_resumes_a_killed_run(tmp: Path, monkeypatch, executor: str, engine: dict) -> None:
    """Under `executor`, one run SIGKILLed after its first checkpoints is resumed under the same run id."""
    faults = [{"kind": "kill", "step": 150, "marker": str(tmp / "killed"), "d_model": 32}]
    result, out = _in_process_sweep(_sweep_yaml(tmp, faults, executor, engine), tmp, monkeypatch)
    runs = _planned(tmp)
    _check_nothing_lost(tmp, runs)
    assert len(result.finished) == 3 and not result.left_out, out
    killed = next(r for r in runs if r.info.run_name.endswith("N3.37e+04"))
    assert killed.data.tags[SWEEP_ATTEMPTS_TAG] == "2", out
    assert "resuming" in out, out
    _assert_resumed(tmp, killed)


def test_slurm_sweep_resumes_a_killed_run(slurm_cluster, tmp_path, monkeypatch):
    _sweep_resumes_a_killed_run(tmp_path, monkeypatch, "slurm", {"partition": slurm_cluster.partition,
                                                                 "time_min": 10})


def test_ray_sweep_resumes_a_killed_run(ray_cluster, tmp_path, monkeypatch):
    _sweep_resumes_a_killed_run(tmp_path, monkeypatch, "ray", {"address": ray_cluster})
