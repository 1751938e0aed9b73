"""`ray`: one Ray task per run, on a Ray cluster the sweep joins or starts (extra ``lightning-scaling[ray]``).

Each job is one Ray task that runs `run_job` on whichever node has the run's CPUs and GPUs free (``num_cpus``,
``num_gpus``; Ray gives the task its own ``CUDA_VISIBLE_DEVICES``). The job travels whole to the node: its command
line, its `env` (`run_job` adds ``OMP_NUM_THREADS``) and its working folder and log file, both made absolute here
against the sweep's working folder, because a Ray worker's own folder is not the sweep's. Ray never reruns a task
(``max_retries=0``): a run that fails is the sweep's to resume from its checkpoint, and a rerun Ray started by
itself would train the same run twice behind the sweep's back. Ray's own failures (a dead worker, a lost node, a
cancelled task) become an `Outcome` with the reason.

Ray is imported only when the executor first talks to the cluster (`check` or `submit`): building one to check its
settings needs no Ray. The sweep's YAML ``ray:`` section gives the settings: `address`, `num_cpus`, `runtime_env`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.executors.base import Executor, Handle, Job, Outcome, Resources, run_job

__all__ = ["OPTIONS", "RayExecutor", "local_store", "refuse_oversized", "refuse_unreachable_store"]

#: The keys of the sweep YAML's ``ray:`` section.
OPTIONS = ("address", "num_cpus", "runtime_env")

_ADDRESS_FORMS = ("unset (RAY_ADDRESS, else a new local cluster)", "'auto'", "'local'", "'host:port'",
                  "'ray://host:port'")

#: Ray's failures, most specific first: (exception class name in `ray.exceptions`, why the run ended).
_RAY_FAILURES = (
    ("TaskCancelledError", "cancelled"),
    ("OutOfMemoryError", "killed by Ray's memory monitor: its node ran out of memory"),
    ("WorkerCrashedError", "the Ray worker running it died (killed, or its node failed); Ray does not rerun it"),
    ("NodeDiedError", "the Ray node running it died"),
    ("RayTaskError", "the Ray task raised"),
)


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise ConfigurationError("--executor ray needs the `ray` package, which is not installed: "
                                 "pip install 'lightning-scaling[ray]'") from err
    return ray


def _check_address(address) -> str | None:
    """`address` if it is one of the forms ``ray.init`` takes, else a `ConfigurationError` naming them."""
    if address is None:
        return None
    bad = ConfigurationError(f"sweep.ray.address must be {', '.join(_ADDRESS_FORMS)}; got {address!r}")
    if not isinstance(address, str) or not address.strip():
        raise bad
    address = address.strip()
    if address in ("auto", "local"):
        return address
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if "://" in rest or "/" in rest or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise bad
    return address


def local_store(uri: str | None) -> bool:
    """Whether the MLflow tracking URI `uri` is a file on this machine (sqlite, ``file:``, a plain path)."""
    if uri is None or uri.lower() in ("databricks", "databricks-uc", "uc"):  # MLflow's names of hosted stores
        return False
    scheme = urlparse(uri).scheme.lower()
    return scheme in ("", "file", "sqlite") or len(scheme) == 1  # one letter: a Windows drive


def _alive(nodes: Sequence[Mapping]) -> list[Mapping]:
    return [node for node in nodes if node.get("Alive", node.get("alive", False))]


def _node_text(node: Mapping) -> str:
    res = node.get("Resources", {})
    return f"{node.get('NodeManagerAddress', '?')}: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"


def refuse_unreachable_store(tracking_uri: str | None, nodes: Sequence[Mapping]) -> None:
    """Refuse a tracking URI that is a file on this machine when the runs may train on other nodes.

    `nodes` is ``ray.nodes()``; only alive nodes count. A file store (sqlite, ``file:``) is not reachable from the
    other nodes, and on a shared filesystem sqlite's locks do not hold across machines.
    """
    alive = _alive(nodes)
    if local_store(tracking_uri) and len(alive) > 1:
        raise ConfigurationError(
            f"the tracking URI {tracking_uri!r} is a file on this machine, but the Ray cluster has {len(alive)} "
            f"nodes ({'; '.join(_node_text(n) for n in alive)}): runs on the other nodes could not reach it. Use an "
            "MLflow tracking server (mlflow server --backend-store-uri postgresql://...; tracking URI "
            "http://host:5000) or a database server every node reaches (postgresql://...)")


def refuse_oversized(jobs: Sequence[Job], nodes: Sequence[Mapping]) -> None:
    """Refuse a job that needs more CPUs or GPUs than any one alive node of ``ray.nodes()`` has: Ray would queue it
    forever."""
    alive = _alive(nodes)
    for need in dict.fromkeys(job.resources for job in jobs):
        fits = any(n.get("Resources", {}).get("CPU", 0) >= need.cpus and n.get("Resources", {}).get("GPU", 0)
                   >= need.gpus for n in alive)
        if not fits:
            name = next(job.name for job in jobs if job.resources == need)
            have = "; ".join(_node_text(n) for n in alive) or "no alive node"
            raise ConfigurationError(
                f"run {name!r} needs {need.cpus} CPUs and {need.gpus} GPUs on one node, but no node of the Ray "
                f"cluster has that many ({have}); Ray would keep it waiting forever. Lower the runs' resources "
                "(cpus, gpus) or add a node that large")


def _why(err: BaseException, ray) -> str:
    """The reason an `Outcome` gives for Ray's exception `err`."""
    for name, text in _RAY_FAILURES:
        cls = getattr(ray.exceptions, name, None)
        if cls is not None and isinstance(err, cls):
            if name == "RayTaskError":
                cause = getattr(err, "cause", None) or err
                lines = str(cause).strip().splitlines()
                return f"{text} {type(cause).__name__}: {lines[-1] if lines else ''}"[:500]
            return text
    first = (str(err).strip().splitlines() or [""])[0]
    return f"Ray failed: {type(err).__name__}: {first}"[:500]


class _RayHandle(Handle):
    """One submitted job: its Ray object reference and, once read, its `Outcome`."""

    def __init__(self, job: Job, ref, ray):
        self.job, self._ref, self._ray = job, ref, ray
        self._start = time.monotonic()
        self._cancelled = False
        self._outcome: Outcome | None = None

    def done(self) -> bool:
        if self._outcome is not None:
            return True
        try:
            ready, _ = self._ray.wait([self._ref], timeout=0)
        except Exception:  # noqa: BLE001  (the connection is gone: outcome() says why, without waiting)
            return True
        return bool(ready)

    def outcome(self) -> Outcome:
        if self._outcome is None:
            try:
                out = self._ray.get(self._ref)
            except Exception as err:  # noqa: BLE001  (every engine failure is an Outcome, never an exception)
                why = "cancelled" if self._cancelled else _why(err, self._ray)
                out = Outcome(self.job.name, None, time.monotonic() - self._start, why)
            if self._cancelled and not out.ok and out.error != "cancelled":
                out = replace(out, error=f"cancelled ({out.error})")
            self._outcome = out
        return self._outcome

    def cancel(self) -> None:
        """Stop the job: a queued task never starts; a running one's worker is killed, and its command with it."""
        self._cancelled = True
        try:
            self._ray.cancel(self._ref, force=True)
        except Exception:
            if not self.done():
                raise


class RayExecutor(Executor):
    """Run each job as a Ray task on a Ray cluster.

    Args:
        address: the cluster. Unset: the one ``RAY_ADDRESS`` names if set, else a new local cluster on this machine
            (closed with the executor). ``"auto"``: the cluster already running on this machine (``ray start``).
            ``"local"``: always a new local cluster. ``"host:port"``: a cluster's head node (its GCS port).
            ``"ray://host:port"``: a remote cluster through Ray Client.
        num_cpus: the CPUs of a local cluster this executor starts (default: all of this machine's); a cluster it
            joins has its own.
        runtime_env: Ray's runtime environment for the runs' tasks (``pip``, ``env_vars``, ``working_dir`` ...),
            e.g. to ship this package to nodes that lack it.
        resources: what each run needs (unused: each job carries its own `resources`, which Ray schedules by);
            every executor factory takes it.
        folder: unused (the runs' logs are the jobs' own files; Ray keeps its own under its temporary folder);
            every executor factory takes it.

    The connection is made on first use. If this process is already connected to Ray (``ray.init`` called
    elsewhere), that connection is used and left open at `close`; otherwise `close` disconnects, which stops the
    cluster if this executor started it.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, runtime_env: Mapping | None = None,
                 resources: Resources | None = None, folder: str | Path | None = None, **unknown):
        if unknown:
            raise ConfigurationError(f"sweep.ray does not take {sorted(unknown)}; its keys are {list(OPTIONS)}")
        self.address = _check_address(address)
        if num_cpus is not None and (not isinstance(num_cpus, int) or isinstance(num_cpus, bool) or num_cpus < 1):
            raise ConfigurationError(f"sweep.ray.num_cpus must be a positive integer (or unset), got {num_cpus!r}")
        joins = self._target() != "local"
        if num_cpus is not None and joins:
            raise ConfigurationError(
                f"sweep.ray.num_cpus sizes a local cluster this executor starts, but it joins the cluster at "
                f"{self._target()!r} (sweep.ray.address or RAY_ADDRESS), which has its own size: remove num_cpus")
        if runtime_env is not None and not isinstance(runtime_env, Mapping):
            raise ConfigurationError(f"sweep.ray.runtime_env must be a mapping (Ray's runtime environment: pip, "
                                     f"env_vars, working_dir ...), got {runtime_env!r}")
        self.num_cpus = num_cpus
        self.runtime_env = dict(runtime_env) if runtime_env is not None else None
        self.resources = resources or Resources()
        self.folder = folder
        self._ray = None
        self._task = None
        self._owns = False
        self._handles: list[_RayHandle] = []

    def _target(self) -> str:
        """The address handed to ``ray.init``: the configured one, else ``RAY_ADDRESS``, else ``"local"``."""
        return self.address or os.environ.get("RAY_ADDRESS") or "local"

    def _connect(self):
        """Ray, connected to the cluster (joining or starting it on first use)."""
        if self._ray is not None:
            return self._ray
        ray = _import_ray()
        if not ray.is_initialized():
            target = self._target()
            # each run's output already goes to its log file: no worker output forwarded, Ray's INFO lines off
            kwargs = {"log_to_driver": False, "logging_level": logging.WARNING, "runtime_env": self.runtime_env}
            if target == "local":
                kwargs.update(num_cpus=self.num_cpus, include_dashboard=False)
            try:
                ray.init(address=target, **kwargs)
            except (ConnectionError, RuntimeError, ValueError, TypeError) as err:
                hint = "" if target == "local" else (
                    " (a cluster with token authentication needs RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN "
                    "or ~/.ray/auth_token here)")
                raise ConfigurationError(f"could not {'start' if target == 'local' else 'join'} the Ray cluster "
                                         f"(sweep.ray.address = {target!r}, runtime_env = {self.runtime_env!r}): "
                                         f"{err}{hint}") from err
            self._owns = True
        self._task = ray.remote(max_retries=0, retry_exceptions=False)(run_job)
        self._ray = ray
        return ray

    def check(self, jobs: Sequence[Job], tracking_uri: str | None = None) -> None:
        """Refuse a local tracking store on a cluster of several nodes, and a job no node is large enough for."""
        nodes = self._connect().nodes()
        refuse_unreachable_store(tracking_uri, nodes)
        refuse_oversized(jobs, nodes)

    def submit(self, jobs: Sequence[Job]) -> list[Handle]:
        """One Ray task per job, named after the run; the job's log and folder made absolute against this folder."""
        ray = self._connect()
        here = os.getcwd()
        handles = []
        for job in jobs:
            job = replace(job, log=os.path.join(here, job.log), cwd=os.path.join(here, job.cwd) if job.cwd else here,
                          env=dict(job.env))
            task = self._task.options(num_cpus=job.resources.cpus, num_gpus=job.resources.gpus, name=job.name)
            handles.append(_RayHandle(job, task.remote(job), ray))
        self._handles.extend(handles)
        return list(handles)

    def close(self) -> None:
        """Cancel this executor's unfinished tasks; disconnect from Ray if this executor connected (which stops a
        cluster it started)."""
        if self._ray is None:
            return
        for handle in self._handles:
            if not handle.done():
                handle.cancel()
        self._handles.clear()
        if self._owns:
            self._ray.shutdown()
        self._ray, self._task, self._owns = None, None, False
