"""The `ray` executor: its settings (no Ray needed), what it refuses before submitting, and, on a real one-node
Ray cluster started once for the module (`ray_cluster`), runs that end well, runs killed by a signal, a Ray worker
that dies under its run, cancelling, and one real training run logged to MLflow."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray_cluster as cluster
from servers import REPO, env

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.executors import Job, Resources, as_completed, make_executor
from lightning_scaling.executors.ray import RayExecutor, local_store, refuse_oversized, refuse_unreachable_store

NO_RAY = cluster.ray_missing()
ray_cluster = cluster.ray_cluster  # the module's one Ray cluster: its address


def node(cpus: float, gpus: float = 0, alive: bool = True, ip: str = "10.0.0.1") -> dict:
    """One entry of ``ray.nodes()``, with the fields the executor reads."""
    res = {"CPU": cpus, "memory": 1e9, **({"GPU": gpus} if gpus else {})}
    return {"NodeID": ip, "Alive": alive, "NodeManagerAddress": ip, "Resources": res}


# -- settings ---------------------------------------------------------------------------------------------------
def test_unknown_keys_are_refused_with_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigurationError, match=r"sweep.ray does not take \['adress'\].*'address', 'num_cpus'"):
        RayExecutor(adress="auto")
    if NO_RAY is None:  # the registry builds it from the YAML section (and refuses a missing ray itself)
        with pytest.raises(ConfigurationError, match="runtime_env"):
            make_executor("ray", Resources(), tmp_path, {"max_retries": 3})
        assert make_executor("ray", Resources(), tmp_path, {"address": "auto"}).address == "auto"


@pytest.mark.parametrize("address", [None, "auto", "local", "10.0.0.1:6379", "head-node:6379", "ray://head:10001"])
def test_the_addresses_ray_takes_are_accepted(address, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert RayExecutor(address=address).address == address


@pytest.mark.parametrize("address", ["", 6379, "head", "head:", ":6379", "head:port", "head:70000",
                                     "http://head:8265", "ray://head", "ray://head:10001/x"])
def test_bad_addresses_name_the_field_and_the_forms(address):
    with pytest.raises(ConfigurationError, match=r"sweep.ray.address must be .*'auto'.*'ray://host:port'"):
        RayExecutor(address=address)


@pytest.mark.parametrize("num_cpus", [0, -2, True, 1.5, "2"])
def test_bad_num_cpus_is_refused(num_cpus, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigurationError, match="sweep.ray.num_cpus must be a positive integer"):
        RayExecutor(num_cpus=num_cpus)


def test_num_cpus_is_for_a_cluster_the_executor_starts(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert RayExecutor(num_cpus=2).num_cpus == 2
    assert RayExecutor(address="local", num_cpus=2).num_cpus == 2
    with pytest.raises(ConfigurationError, match="joins the cluster at 'auto'.*remove num_cpus"):
        RayExecutor(address="auto", num_cpus=2)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # unset address: the cluster RAY_ADDRESS names
    with pytest.raises(ConfigurationError, match="joins the cluster at '10.0.0.1:6379'"):
        RayExecutor(num_cpus=2)


def test_runtime_env_must_be_a_mapping():
    assert RayExecutor(address="auto", runtime_env={"env_vars": {"A": "1"}}).runtime_env == {"env_vars": {"A": "1"}}
    with pytest.raises(ConfigurationError, match="sweep.ray.runtime_env must be a mapping"):
        RayExecutor(address="auto", runtime_env="pip: [x]")


def test_building_and_importing_it_does_not_import_ray():
    code = ("import sys, lightning_scaling.executors, lightning_scaling.executors.ray as r; "
            "r.RayExecutor(address='auto', runtime_env={}); print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# -- what check() refuses ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("uri", "local"), [("sqlite:///mlflow.db", True), ("sqlite:////abs/mlflow.db", True),
                                            ("file:./mlruns", True), ("file:///abs/mlruns", True),
                                            ("./mlruns", True), ("/abs/mlruns", True), ("http://host:5000", False),
                                            ("https://host", False), ("postgresql://u@db/mlflow", False),
                                            ("databricks", False), (None, False)])
def test_local_stores_are_recognised(uri, local):
    assert local_store(uri) is local


def test_a_file_store_is_refused_on_several_nodes_only():
    two = [node(4, ip="10.0.0.1"), node(4, ip="10.0.0.2")]
    with pytest.raises(ConfigurationError, match=r"sqlite:///mlflow.db.*2 nodes.*10.0.0.2.*MLflow tracking server"):
        refuse_unreachable_store("sqlite:///mlflow.db", two)
    with pytest.raises(ConfigurationError, match="file:./mlruns"):
        refuse_unreachable_store("file:./mlruns", two)
    refuse_unreachable_store("http://10.0.0.1:5000", two)
    refuse_unreachable_store("sqlite:///mlflow.db", [node(4)])  # one node: this machine's file is theirs
    refuse_unreachable_store("sqlite:///mlflow.db", [node(4), node(4, alive=False, ip="10.0.0.2")])


def test_a_job_larger_than_every_node_is_refused():
    nodes = [node(2), node(8, ip="10.0.0.2"), node(16, gpus=2, alive=False, ip="10.0.0.3")]
    refuse_oversized([Job("a", ("x",), "a.log", resources=Resources(cpus=8))], nodes)
    with pytest.raises(ConfigurationError, match=r"run 'big' needs 9 CPUs and 0 GPUs.*10.0.0.2: 8 CPUs.*forever"):
        refuse_oversized([Job("ok", ("x",), "a.log"), Job("big", ("x",), "b.log", resources=Resources(cpus=9))],
                         nodes)
    with pytest.raises(ConfigurationError, match="needs 1 CPUs and 1 GPUs"):  # the node with GPUs is dead
        refuse_oversized([Job("gpu", ("x",), "a.log", resources=Resources(cpus=1, gpus=1))], nodes)
    with pytest.raises(ConfigurationError, match="no alive node"):
        refuse_oversized([Job("a", ("x",), "a.log")], [])


# -- on a real Ray cluster --------------------------------------------------------------------------------------
def python_job(name: str, code: str, *args: str, log: str | None = None, **kwargs) -> Job:
    return Job(name, (sys.executable, "-c", code, *args), log or f"logs/{name}.log", **kwargs)


STARTED = """
import os, sys, time
open(sys.argv[1], "w").write(repr(time.time()))
open("out.txt", "w").write(os.environ["MARK"] + " " + os.environ["OMP_NUM_THREADS"])
print("hello from", os.environ["MARK"])
"""


@pytest.mark.slow
def test_runs_end_well_in_their_folders_with_their_logs_and_environment(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the sweep's folder: relative logs and folders are resolved against it
    (tmp_path / "sub").mkdir()
    (tmp_path / "abs").mkdir()
    jobs = [python_job(f"run{i}", STARTED, str(tmp_path / f"start{i}"), cwd=cwd, env={"MARK": f"m{i}"})
            for i, cwd in enumerate([None, "sub", str(tmp_path / "abs")])]
    with RayExecutor(address=ray_cluster) as executor:
        executor.check(jobs, f"sqlite:///{tmp_path}/mlflow.db")  # one node: a file store is fine
        submitted = time.time()
        handles = executor.submit(jobs)
        outcomes = {h.job.name: h.outcome() for h in as_completed(handles, poll=0.05)}
    assert [o.ok for o in outcomes.values()] == [True] * 3, outcomes
    assert all(o.returncode == 0 for o in outcomes.values())
    for i, folder in enumerate([tmp_path, tmp_path / "sub", tmp_path / "abs"]):
        assert (folder / "out.txt").read_text() == f"m{i} 1"  # the job's env and OMP_NUM_THREADS = its CPUs
        assert f"hello from m{i}" in (tmp_path / "logs" / f"run{i}.log").read_text()
    delays = [float((tmp_path / f"start{i}").read_text()) - submitted for i in range(3)]
    print(f"dispatch: submission to the command's start {', '.join(f'{d:.2f}' for d in delays)} s")
    assert max(delays) < 10.0


@pytest.mark.slow
def test_a_run_killed_by_a_signal_says_so(ray_cluster, tmp_path):
    job = python_job("killed", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", log=str(tmp_path / "k.log"))
    with RayExecutor(address=ray_cluster) as executor:
        outcome = executor.submit([job])[0].outcome()
    assert (outcome.returncode, outcome.error) == (-9, "killed by SIGKILL")


@pytest.mark.slow
def test_a_dead_ray_worker_is_an_outcome_and_is_not_rerun(ray_cluster, tmp_path):
    """The command kills its parent, the Ray worker running the task: an error Outcome, after one attempt."""
    starts = tmp_path / "starts"
    code = "import os, signal, sys; open(sys.argv[1], 'a').write('start\\n'); os.kill(os.getppid(), signal.SIGKILL)"
    job = python_job("orphan", code, str(starts), log=str(tmp_path / "o.log"))
    with RayExecutor(address=ray_cluster) as executor:
        handle = executor.submit([job])[0]
        outcome = handle.outcome()
        assert handle.done()
        time.sleep(1.0)  # a rerun, were there one, would have started by now
    assert not outcome.ok and outcome.returncode is None
    assert "Ray worker running it died" in outcome.error
    print(f"a dead worker's outcome: {outcome}")
    assert starts.read_text() == "start\n"


@pytest.mark.slow
def test_cancel_stops_a_running_run_and_a_queued_one(ray_cluster, tmp_path):
    sleeper = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
    running = python_job("running", sleeper, str(tmp_path / "pid"), log=str(tmp_path / "r.log"),
                         resources=Resources(cpus=2))
    queued = python_job("queued", sleeper, str(tmp_path / "queued-pid"), log=str(tmp_path / "q.log"),
                        resources=Resources(cpus=2))  # the cluster's two CPUs are taken: it waits
    with RayExecutor(address=ray_cluster) as executor:
        first, second = executor.submit([running, queued])
        deadline = time.monotonic() + 30
        while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text():
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.1)
        pid = int((tmp_path / "pid").read_text())
        assert not first.done() and not second.done()
        second.cancel()
        first.cancel()
        start = time.monotonic()
        outcomes = [first.outcome(), second.outcome()]
        waited = time.monotonic() - start
    assert all(o.error is not None and o.error.startswith("cancelled") for o in outcomes), outcomes
    print(f"cancelled: {outcomes}, after {waited:.2f} s")
    assert waited < 15.0
    deadline = time.monotonic() + 10
    while _alive(pid):  # the run's own process goes with its worker
        assert time.monotonic() < deadline, f"the cancelled run's process {pid} still runs"
        time.sleep(0.1)
    assert not (tmp_path / "queued-pid").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


@pytest.mark.slow
def test_check_refuses_a_run_larger_than_the_cluster(ray_cluster):
    with RayExecutor(address=ray_cluster) as executor:
        executor.check([python_job("fits", "pass", resources=Resources(cpus=2))])
        with pytest.raises(ConfigurationError, match=r"run 'wide' needs 3 CPUs and 0 GPUs.*: 2 CPUs, 0 GPUs"):
            executor.check([python_job("wide", "pass", resources=Resources(cpus=3))])
        with pytest.raises(ConfigurationError, match="needs 1 CPUs and 1 GPUs"):
            executor.check([python_job("gpu", "pass", resources=Resources(cpus=1, gpus=1))])


@pytest.mark.slow
def test_a_tiny_gpt_trains_on_ray_and_its_mlflow_run_finishes(ray_cluster, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    argv = (sys.executable, "-m", "lightning_scaling.cli", "train", "--config", "examples/tiny_gpt/config.yaml",
            "--trainer.max_steps=24", "--trainer.val_check_interval=12", "--trainer.limit_val_batches=2",
            "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.tracking_uri={uri}",
            "--trainer.logger.init_args.experiment_name=ray", "--trainer.callbacks.init_args.bootstrap=0")
    job = Job("tiny", argv, str(tmp_path / "tiny.log"), cwd=str(REPO), env={"MLFLOW_DISABLE_TELEMETRY": "true"})
    with RayExecutor(address=ray_cluster) as executor:
        executor.check([job], uri)
        outcome = executor.submit([job])[0].outcome()
    assert outcome.ok, (tmp_path / "tiny.log").read_text()[-3000:]
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ray").experiment_id])
    trained = [r for r in runs if r.info.run_name != "scaling-law"]  # the other: the closing hook's summary
    assert len(trained) == 1 and trained[0].info.status == "FINISHED"
    assert trained[0].data.tags["lightning_scaling.complete"] == "true"
    assert trained[0].data.metrics["scaling/tokens"] == 24 * 16 * 64  # steps x batch x sequence


@pytest.mark.slow
def test_a_connection_made_elsewhere_is_used_and_left_open(ray_cluster, tmp_path):
    import ray

    ray.init(address=ray_cluster, log_to_driver=False, logging_level="WARNING")
    try:
        with RayExecutor(address="local") as executor:  # connected already: no local cluster is started
            outcome = executor.submit([python_job("reuse", "pass", log=str(tmp_path / "r.log"))])[0].outcome()
            assert ray.cluster_resources()["CPU"] == 2
        assert outcome.ok and ray.is_initialized()
    finally:
        ray.shutdown()


LOCAL = """
import json, sys
import ray
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.executors import Job, Resources
from lightning_scaling.executors.ray import RayExecutor

log, out = sys.argv[1], {}
with RayExecutor(num_cpus=1) as executor:
    try:
        executor.check([Job("two", ("true",), log, resources=Resources(cpus=2))])
    except ConfigurationError as err:
        out["refused"] = str(err)
    out["cpus"] = ray.cluster_resources()["CPU"]
    out["ok"] = executor.submit([Job("one", (sys.executable, "-c", "print('ran')"), log)])[0].outcome().ok
out["connected after close"] = ray.is_initialized()
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.skipif(NO_RAY is not None, reason=str(NO_RAY))
def test_unset_address_starts_a_local_cluster_and_close_stops_it(tmp_path):
    """In its own process: Ray's local start sets process-wide state (its authentication mode) that must not reach
    the other tests. Token authentication is on, as Ray's default for a local cluster, with a token given in the
    environment so that none is written to ~/.ray."""
    local_env = {k: v for k, v in env().items() if not k.startswith("RAY_")}
    local_env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    local_env["RAY_TMPDIR"] = temp = tempfile.mkdtemp(prefix="ls-ray-")  # short: Ray's sockets live under it
    try:
        done = subprocess.run([sys.executable, "-c", LOCAL, str(tmp_path / "one.log")], capture_output=True,
                              text=True, env=local_env, cwd=tmp_path, timeout=120)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "needs 2 CPUs" in out["refused"] and out["cpus"] == 1 and out["ok"], out
    assert not out["connected after close"]
    assert "ran" in (tmp_path / "one.log").read_text()
    noise = [line for line in done.stderr.splitlines() if line.strip()]
    print("console of a local start:", *noise, sep="\n  ")
    assert not [line for line in noise if " INFO " in line]  # Ray's own INFO lines are off
