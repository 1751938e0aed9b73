"""The `slurm` executor: its settings and checks against stand-in SLURM commands (fast), then job arrays on a real
single-node cluster (slow; tests/slurm_cluster.py, skipped without SLURM, MUNGE or root)."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.executors import Job, Resources, as_completed, make_executor
from lightning_scaling.executors.slurm import OPTIONS, SlurmExecutor, _expand, _Queue, _SlurmHandle

REPO = Path(__file__).resolve().parents[1]


def fake_commands(tmp_path: Path, monkeypatch, **scripts: str) -> None:
    """Put stand-ins for SLURM's commands (name -> shell body) alone on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


# The cluster the stand-ins describe: `gpu` (default, 4 nodes of 64 CPUs), `cpu` (1 node of 8).
SINFO = "printf 'gpu*|3|64\\ngpu*|1|64\\ncpu|1|8\\n'"
CLUSTER = {"sinfo": SINFO, "sbatch": "exit 0", "srun": "exit 0", "squeue": "exit 0"}


def test_unknown_setting_names_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigurationError, match="unknown setting.*'partiton'") as err:
        make_executor("slurm", Resources(), tmp_path, {"partiton": "gpu"})
    for name in OPTIONS:
        assert name in str(err.value)


@pytest.mark.parametrize(("options", "field"), [
    ({"time_min": 0}, "time_min"), ({"time_min": "60"}, "time_min"), ({"time_min": True}, "time_min"),
    ({"time_min": None}, "time_min"), ({"array_parallelism": -2}, "array_parallelism"),
    ({"mem_gb": "4G"}, "mem_gb"), ({"mem_gb": 0}, "mem_gb"), ({"partition": ""}, "partition"),
    ({"partition": 3}, "partition"), ({"sbatch": ["--qos=high"]}, "sbatch"), ({"sbatch": {"qos": None}}, "sbatch"),
    ({"setup": "module load cuda"}, "setup"), ({"setup": [1]}, "setup"),
])
def test_bad_settings_name_their_field(tmp_path, options, field):
    with pytest.raises(ConfigurationError, match=rf"sweep\.slurm\.{field}"):
        make_executor("slurm", Resources(), tmp_path, options)


def test_good_settings_reach_sbatch(tmp_path, monkeypatch):
    """Every setting becomes its sbatch line in the batch script submitit writes (no cluster needed to render it)."""
    submitit = pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    params = {}

    class Recorder:  # submitit's SlurmExecutor wants `srun` on PATH; only its parameters matter here
        def __init__(self, folder):
            pass

        def update_parameters(self, **kwargs):
            params.update(kwargs)

    monkeypatch.setattr(submitit, "SlurmExecutor", Recorder)
    SlurmExecutor(Resources(cpus=3, gpus=2), tmp_path, partition="gpu", time_min=30, array_parallelism=4, mem_gb=1.5,
                  sbatch={"--account": "lab", "exclusive": True}, setup=["module load cuda"])._executor()
    script = _make_sbatch_string(command="run", folder=tmp_path, map_count=10, **params)
    for line in ("--partition=gpu", "--time=30", "--cpus-per-task=3", "--gpus-per-node=2", "--mem=1536MB",
                 "--array=0-9%4", "--account=lab", "#SBATCH --exclusive\n", "module load cuda"):
        assert line in script


def test_no_sbatch_means_slurm_is_unreachable(tmp_path, monkeypatch):
    fake_commands(tmp_path, monkeypatch, sinfo=SINFO)
    with pytest.raises(ConfigurationError, match="SLURM is not reachable from this machine.*sbatch"):
        SlurmExecutor(Resources(), tmp_path).check([])


def test_sinfo_failing_says_why(tmp_path, monkeypatch):
    failing = "echo 'Unable to contact slurm controller' >&2; exit 1"
    fake_commands(tmp_path, monkeypatch, **{**CLUSTER, "sinfo": failing})
    with pytest.raises(ConfigurationError, match="sinfo.*Unable to contact slurm controller"):
        SlurmExecutor(Resources(), tmp_path).check([])


def test_missing_partition_lists_the_real_ones(tmp_path, monkeypatch):
    fake_commands(tmp_path, monkeypatch, **CLUSTER)
    with pytest.raises(ConfigurationError, match=r"sweep\.slurm\.partition.*'gpux'.*\['cpu', 'gpu'\]"):
        SlurmExecutor(Resources(), tmp_path, partition="gpux").check([])
    SlurmExecutor(Resources(), tmp_path, partition="cpu").check([])
    SlurmExecutor(Resources(), tmp_path).check([])  # the default partition, gpu


def test_runs_bigger_than_a_node_are_refused(tmp_path, monkeypatch):
    fake_commands(tmp_path, monkeypatch, **CLUSTER)
    with pytest.raises(ConfigurationError, match="16 CPUs.*'cpu' have at most 8"):
        SlurmExecutor(Resources(cpus=16), tmp_path, partition="cpu").check([])
    SlurmExecutor(Resources(cpus=16), tmp_path, partition="gpu").check([])


@pytest.mark.parametrize("uri", ["sqlite:///runs/mlflow.db", "file:./mlruns", "/shared/mlruns", "mlruns"])
def test_a_local_store_is_refused_on_several_nodes(tmp_path, monkeypatch, uri):
    fake_commands(tmp_path, monkeypatch, **CLUSTER)
    with pytest.raises(ConfigurationError, match="4 nodes.*MLflow server"):
        SlurmExecutor(Resources(), tmp_path, partition="gpu").check([], uri)
    SlurmExecutor(Resources(), tmp_path, partition="cpu").check([], uri)  # one node: the store is on it
    SlurmExecutor(Resources(), tmp_path, partition="gpu").check([], "http://tracking:5000")


def test_squeue_array_ids_expand():
    assert _expand("12_[3-5%2]") == ["12_3", "12_4", "12_5"]
    assert _expand("12_[0,7]") == ["12_0", "12_7"]
    assert _expand("12_4") == ["12_4"]
    assert _expand("13") == ["13"]


@dataclass
class _Paths:
    result_pickle: Path
    stdout: Path


@dataclass
class _Submitted:  # what the handle reads of a submitit job
    job_id: str
    paths: _Paths
    error: str = ""

    def result(self):
        from submitit.core.utils import FailedJobError

        raise FailedJobError(self.error)


@pytest.mark.parametrize(("listing", "said"), [
    ("7_0|RUNNING\\n7_1|CANCELLED", "SLURM job 7_1 was cancelled without a result"),
    ("7_1|NODE_FAIL", "SLURM job 7_1 lost its node"),
    ("7_1|TIMEOUT", r"SLURM job 7_1 reached its time limit \(5 min"),
    ("7_0|RUNNING", r"SLURM job 7_1 left SLURM's queue \(cancelled before it started"),
])
def test_a_job_gone_without_result_says_how_it_ended(tmp_path, monkeypatch, listing, said):
    fake_commands(tmp_path, monkeypatch, squeue=f"printf '{listing}\\n'", sacct="exit 1")
    submitted = _Submitted("7_1", _Paths(tmp_path / "none.pkl", tmp_path / "7_1.out"))
    handle = _SlurmHandle(Job("r", ("true",), str(tmp_path / "r.log")), submitted, _Queue(every=0.0), time_min=5)
    assert handle.done()
    outcome = handle.outcome()
    assert outcome.returncode is None and not outcome.ok
    assert pytest.approx(0, abs=30) == outcome.seconds
    assert re.search(said, outcome.error), outcome.error


@pytest.mark.parametrize(("trace", "said"), [
    ("submitit.core.utils.UncompletedJobError: Job not requeued because: timed-out and not checkpointable.",
     r"SLURM job 7_1 reached its time limit \(5 min: sweep.slurm.time_min\)"),
    ("Traceback:\n  File x\nOSError: [Errno 28] No space left on device\n----------------------",
     r"SLURM job 7_1 failed: OSError: \[Errno 28\] No space left on device \(submitit's log: .*7_1.out\)"),
])
def test_a_job_that_failed_in_submitit_says_why(tmp_path, monkeypatch, trace, said):
    pytest.importorskip("submitit")
    fake_commands(tmp_path, monkeypatch, squeue="exit 0", sacct="exit 1")
    (tmp_path / "result.pkl").write_bytes(b"")
    submitted = _Submitted("7_1", _Paths(tmp_path / "result.pkl", tmp_path / "7_1.out"), trace)
    outcome = _SlurmHandle(Job("r", ("true",), str(tmp_path / "r.log")), submitted, _Queue(), 5).outcome()
    assert outcome.returncode is None and re.match(said, outcome.error), outcome.error


def test_a_job_still_queued_is_not_done(tmp_path, monkeypatch):
    fake_commands(tmp_path, monkeypatch, squeue="printf '7_[1-3%2]|PENDING\\n'")
    submitted = _Submitted("7_2", _Paths(tmp_path / "none.pkl", tmp_path / "7_2.out"))
    assert not _SlurmHandle(Job("r", ("true",), str(tmp_path / "r.log")), submitted, _Queue(every=0.0), 5).done()
    (tmp_path / "broken").mkdir()
    fake_commands(tmp_path / "broken", monkeypatch, squeue="exit 1")
    handle = _SlurmHandle(Job("r", ("true",), str(tmp_path / "r.log")), submitted, _Queue(every=0.0), 5)
    assert not handle.done()  # squeue failing decides nothing: the job is not taken for ended


# -- a real cluster -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_job_array_on_a_real_cluster(slurm_cluster, tmp_path, caplog):
    """One array: three runs write their start time and log; one SIGKILLs itself, one exits 1. Each `Outcome`
    says so; the dispatch overhead (submission to a run's command starting) stays under 10 s; and submitit never
    calls `sacct`, which fails, with a warning each time, on this cluster without accounting."""
    caplog.set_level(logging.DEBUG, logger="submitit")
    ex = SlurmExecutor(Resources(cpus=1), tmp_path / "submitit", time_min=5)
    ex.check([], f"sqlite:///{tmp_path}/mlflow.db")  # one node: a local store is fine
    write = "import sys, time; print('run', sys.argv[2]); open(sys.argv[1], 'w').write(repr(time.time()))"
    jobs = [Job(f"ok{i}", (sys.executable, "-c", write, str(tmp_path / f"start{i}"), str(i)),
                str(tmp_path / f"ok{i}.log")) for i in range(3)]
    jobs += [Job("killed", (sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
                 str(tmp_path / "killed.log")),
             Job("raised", (sys.executable, "-c", "raise RuntimeError('bad run')"), str(tmp_path / "raised.log"))]
    submitted = time.time()
    handles = ex.submit(jobs)
    assert len({h.job_id.split("_")[0] for h in handles}) == 1  # one job array
    outcomes = {h.job.name: h.outcome() for h in as_completed(handles, poll=0.1)}
    ended = time.time() - submitted
    for i in range(3):
        assert outcomes[f"ok{i}"].ok and outcomes[f"ok{i}"].returncode == 0
        assert (tmp_path / f"ok{i}.log").read_text() == f"run {i}\n"
    assert outcomes["killed"].error == "killed by SIGKILL"
    assert outcomes["raised"].error == "exit status 1"
    assert "RuntimeError: bad run" in (tmp_path / "raised.log").read_text()
    overhead = min(float((tmp_path / f"start{i}").read_text()) for i in range(3)) - submitted
    print(f"\nslurm dispatch overhead: {overhead:.2f} s to the first run's start; 5 runs on 2 CPUs ended in "
          f"{ended:.2f} s")
    assert overhead < 10
    assert not [r.getMessage() for r in caplog.records if "sacct" in r.getMessage()]


@pytest.mark.slow
def test_cancel_on_a_real_cluster(slurm_cluster, tmp_path):
    """Cancelling a running run stops its command; cancelling one still waiting for CPUs (and so never started, and
    gone from squeue at once) gives an `Outcome` saying it was cancelled, with its job id."""
    ex = SlurmExecutor(Resources(cpus=2), tmp_path / "submitit", time_min=5)
    sleep = (sys.executable, "-c", "import sys, time; open(sys.argv[1], 'w').close(); time.sleep(60)")
    first, waiting = ex.submit([Job("first", (*sleep, str(tmp_path / "started")), str(tmp_path / "a.log")),
                                Job("waiting", (*sleep, str(tmp_path / "never")), str(tmp_path / "b.log"))])
    deadline = time.monotonic() + 20  # 2 CPUs each on a node of 2: one at a time
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "started").exists() and not waiting.done()
    waiting.cancel()
    first.cancel()
    outcome = waiting.outcome()
    assert outcome.returncode is None and f"SLURM job {waiting.job_id} was cancelled" in outcome.error
    stopped = first.outcome()
    assert stopped.error == "cancelled (killed by SIGTERM)" and stopped.seconds < 30
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_check_names_the_real_partition(slurm_cluster, tmp_path):
    with pytest.raises(ConfigurationError, match=rf"'nope'.*\['{slurm_cluster.partition}'\]"):
        SlurmExecutor(Resources(), tmp_path, partition="nope").check([])
    SlurmExecutor(Resources(), tmp_path, partition=slurm_cluster.partition).check([], "file:./mlruns")
    assert os.environ["SLURM_CONF"] == slurm_cluster.env["SLURM_CONF"]


@pytest.mark.slow
def test_training_run_on_a_real_cluster(slurm_cluster, tmp_path):
    """A real `lightning-scaling train` as a SLURM job: the run ends ok and its MLflow run is FINISHED.

    24 steps, not fewer: the example's warmup (20000 tokens) must end before the decay phase of the run starts."""
    mlflow = pytest.importorskip("mlflow")
    argv = (sys.executable, "-m", "lightning_scaling.cli", "train", "--config", "examples/tiny_gpt/config.yaml",
            "--trainer.max_steps=24", "--trainer.val_check_interval=8", "--trainer.limit_val_batches=2",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            "--trainer.logger.init_args.experiment_name=slurm", "--trainer.callbacks.init_args.bootstrap=0")
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    ex = SlurmExecutor(Resources(cpus=2), tmp_path / "submitit", time_min=10)
    [handle] = ex.submit([Job("train", argv, str(tmp_path / "train.log"), cwd=str(REPO), env=env)])
    outcome = handle.outcome()
    assert outcome.ok, (tmp_path / "train.log").read_text()[-3000:]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("slurm").experiment_id])
    [run] = [r for r in runs if r.info.run_name != "scaling-law"]  # the other: the closing hook's law run
    assert run.info.status == "FINISHED" and run.data.metrics


@pytest.mark.slow
def test_a_cluster_that_does_not_come_up_is_stopped(monkeypatch):
    """The fixture's own cleanup: a cluster not idle in time raises, saying so, and leaves no daemon or folder."""
    import slurm_cluster as slurm

    reason = slurm.slurm_missing()
    if reason:
        pytest.skip(reason)
    stopped, stop = [], slurm.stop
    monkeypatch.setattr(slurm, "stop", lambda cluster: (stopped.append(cluster), stop(cluster)))
    with pytest.raises(RuntimeError, match="the SLURM node is not idle after 0 s"):
        slurm.start(timeout=0)
    [cluster] = stopped
    assert set(cluster.processes) == {"munged", "slurmctld", "slurmd"}
    assert all(proc.poll() is not None for proc in cluster.processes.values()) and not cluster.base.exists()
