"""`slurm`: a stage's runs as one SLURM job array, through submitit (extra ``lightning-scaling[slurm]``).

Each `submit` is one ``sbatch`` of a job array (`submitit.SlurmExecutor.map_array`); every array task runs
`run_job` on its node, so the run's own output goes to the job's log file as under every engine, and submitit's
files (the batch script, the pickled job and result, submitit's own log) go to `folder`, which the nodes must share
with this machine.

Whether a job has ended is read from its result file and from ``squeue`` (one call every few seconds for all the
jobs of this executor), never from ``sacct``: clusters without accounting are common, and there submitit's
``sacct`` calls fail (with a warning each time) and a job that died without a result (cancelled, out of time, its
node lost) would never be seen to end. A job that leaves the queue without a result is an `Outcome` saying how it
ended (``squeue``'s last state for it), with its SLURM job id and submitit's log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.executors.base import Executor, Handle, Job, Outcome, Resources, run_job

__all__ = ["OPTIONS", "SlurmExecutor"]

#: The settings of the sweep YAML's ``slurm:`` section.
OPTIONS = ("partition", "time_min", "array_parallelism", "mem_gb", "sbatch", "setup")

#: ``squeue`` states of a job that may still produce a result (PREEMPTED: submitit requeues it).
_ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "REQUEUED",
                     "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD",
                     "PREEMPTED"})
#: Why a job that ended in this state left no result.
_ENDED = {
    "CANCELLED": "was cancelled",
    "TIMEOUT": "reached its time limit ({time_min} min: sweep.slurm.time_min)",
    "NODE_FAIL": "lost its node (NODE_FAIL)",
    "OUT_OF_MEMORY": "ran out of memory (sweep.slurm.mem_gb)",
    "BOOT_FAIL": "could not start its node (BOOT_FAIL)",
    "DEADLINE": "passed its deadline",
    "FAILED": "failed",
    "COMPLETED": "completed",
}
_RESULT_GRACE_S = 15.0  # a shared filesystem may show the result file a little after the job's end
_CLIENTS = ("sbatch", "squeue", "sinfo", "srun")


def _run(cmd: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


class _Queue:
    """The ``squeue`` states of this executor's jobs, asked for all of them at once at most every `every` s."""

    def __init__(self, every: float = 2.0):
        self.every = every
        self.states: dict[str, str] = {}  # "<array id>_<task>" or "<job id>" -> last state seen
        self.gone: set[str] = set()  # jobs the last successful call no longer listed
        self.watched: set[str] = set()
        self._last = float("-inf")

    def refresh(self) -> None:
        if time.monotonic() - self._last < self.every or not self.watched:
            return
        self._last = time.monotonic()
        try:
            done = _run(["squeue", "--noheader", "--array", "--states=all", f"--user={os.getuid()}",
                         "--format=%i|%T"], timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return  # the controller may be busy: ask again later, decide nothing now
        if done.returncode != 0:
            return
        listed = {}
        for line in done.stdout.splitlines():
            job_id, _, state = line.strip().partition("|")
            for one in _expand(job_id):
                listed[one] = state.strip().split()[0] if state.strip() else "UNKNOWN"
        self.states.update({k: v for k, v in listed.items() if k in self.watched})
        self.gone = self.watched - set(listed)

    def ended(self, job_id: str) -> bool:
        self.refresh()
        return job_id in self.gone or self.states.get(job_id, "PENDING") not in _ACTIVE


def _expand(job_id: str) -> list[str]:
    """``squeue``'s job ids, one per array task ("12_[3-5%2]" -> 12_3, 12_4, 12_5)."""
    main, sep, tasks = job_id.partition("_")
    if not sep or not tasks.startswith("["):
        return [job_id]
    out = []
    for part in tasks.strip("[]").split("%")[0].split(","):
        low, _, high = part.partition("-")
        high = high or low
        if low.isdigit() and high.isdigit():
            out += [f"{main}_{i}" for i in range(int(low), int(high) + 1)]
    return out


class _SlurmHandle(Handle):
    def __init__(self, job: Job, submitted, queue: _Queue, time_min: int):
        self.job, self._submitted, self._queue, self._time_min = job, submitted, queue, time_min
        self.job_id: str = submitted.job_id
        self._start = time.monotonic()
        self._ended = self._cancelled = False
        queue.watched.add(self.job_id)

    def _has_result(self) -> bool:
        return self._submitted.paths.result_pickle.exists()

    def done(self) -> bool:
        if not self._ended:
            self._ended = self._has_result() or self._queue.ended(self.job_id)
        return self._ended

    def outcome(self) -> Outcome:
        while not self.done():
            time.sleep(1.0)
        deadline = time.monotonic() + _RESULT_GRACE_S
        while not self._has_result() and time.monotonic() < deadline and self._state() in ("COMPLETED", "FAILED"):
            time.sleep(0.5)
        if not self._has_result():
            return self._failed(self._no_result())
        from submitit.core.utils import UncompletedJobError

        try:
            result = self._submitted.result()
        except UncompletedJobError as err:  # run_job itself failed, or submitit stopped it at its time limit
            return self._failed(self._why(str(err)))
        except Exception as err:  # noqa: BLE001  (an unreadable result file: an Outcome, never an exception)
            return self._failed(f"SLURM job {self.job_id}: its result could not be read ({type(err).__name__}: "
                                f"{err})")
        if not isinstance(result, Outcome):
            return self._failed(f"SLURM job {self.job_id} returned {type(result).__name__}, not an Outcome")
        if self._cancelled and not result.ok:
            return Outcome(result.name, result.returncode, result.seconds, f"cancelled ({result.error})")
        return result

    def cancel(self) -> None:
        self._cancelled = True
        try:
            _run(["scancel", self.job_id], timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def _failed(self, error: str) -> Outcome:
        return Outcome(self.job.name, None, time.monotonic() - self._start, error)

    def _state(self) -> str:
        return self._queue.states.get(self.job_id, "UNKNOWN")

    def _no_result(self) -> str:
        state, gone = self._state(), self.job_id in self._queue.gone
        if gone or state not in _ENDED:  # a cancelled array task that never started leaves no state in squeue
            state = _accounted_state(self.job_id) or ("CANCELLED" if self._cancelled else "" if gone else state)
        how = _ENDED[state] if state in _ENDED else f"ended in state {state}" if state else (
            "left SLURM's queue (cancelled before it started, or ended longer ago than SLURM keeps a job's state)")
        return (f"SLURM job {self.job_id} {how.format(time_min=self._time_min)} without a result "
                f"(submitit's log: {self._submitted.paths.stdout})")

    def _why(self, trace: str) -> str:
        if "timed-out" in trace:
            return (f"SLURM job {self.job_id} reached its time limit ({self._time_min} min: sweep.slurm.time_min); "
                    "submitit stopped the run")
        lines = [line.strip() for line in trace.splitlines() if line.strip() and not line.startswith("-" * 10)]
        errors = [line for line in lines if "Error" in line or "Exception" in line]
        last = (errors or lines or ["(no trace)"])[-1]
        return f"SLURM job {self.job_id} failed: {last} (submitit's log: {self._submitted.paths.stdout})"


def _accounted_state(job_id: str) -> str | None:
    """The state ``sacct`` gives (None without accounting, where it fails)."""
    try:
        done = _run(["sacct", "--noheader", "--allocations", "--parsable2", "--format=State", f"--jobs={job_id}"],
                    timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = done.stdout.split() if done.returncode == 0 else []
    return states[0].upper() if states else None


def _partitions() -> tuple[dict[str, tuple[int, int]], str | None]:
    """The cluster's partitions as ``{name: (nodes, most CPUs of a node)}``, and the default one."""
    try:
        done = _run(["sinfo", "--noheader", "--format=%P|%D|%c"])
    except subprocess.TimeoutExpired:
        raise ConfigurationError("--executor slurm: `sinfo` did not answer in 60 s; is the SLURM controller "
                                 "reachable from this machine?") from None
    if done.returncode != 0:
        raise ConfigurationError(f"--executor slurm: `sinfo` failed ({done.stderr.strip() or done.returncode}); "
                                 "SLURM is not reachable from this machine (check SLURM_CONF and that slurmctld "
                                 "runs)")
    found: dict[str, tuple[int, int]] = {}
    default = None
    for line in done.stdout.splitlines():
        name, nodes, cpus = (line.strip().split("|") + ["", "", ""])[:3]
        if not name:
            continue
        if name.endswith("*"):
            name = default = name[:-1]
        had_nodes, had_cpus = found.get(name, (0, 0))
        cpus_n = int("".join(c for c in cpus.split("+")[0] if c.isdigit()) or 0)
        found[name] = (had_nodes + int(nodes or 0), max(had_cpus, cpus_n))
    return found, default


def _local_store(uri: str | None) -> bool:
    """Whether `uri` is an MLflow store on this machine's disk (a path, ``file:`` or ``sqlite:``)."""
    if not uri:
        return False
    scheme = urlparse(uri).scheme.lower()
    return scheme in ("", "file", "sqlite") or len(scheme) == 1  # a Windows drive letter reads as a scheme


def _check_options(partition, time_min, array_parallelism, mem_gb, sbatch, setup) -> None:
    """Raise `ConfigurationError` naming the first setting of the ``slurm:`` section with a wrong type or value."""
    if partition is not None and (not isinstance(partition, str) or not partition.strip()):
        raise ConfigurationError(f"sweep.slurm.partition must be a partition name, got {partition!r}")
    for name, value in (("time_min", time_min), ("array_parallelism", array_parallelism)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigurationError(f"sweep.slurm.{name} must be a positive integer, got {value!r}")
    if time_min is None:
        raise ConfigurationError("sweep.slurm.time_min must be a positive integer (minutes), got None")
    if mem_gb is not None and (isinstance(mem_gb, bool) or not isinstance(mem_gb, (int, float)) or not mem_gb > 0):
        raise ConfigurationError(f"sweep.slurm.mem_gb must be a positive number of GB, got {mem_gb!r}")
    values = (str, int, float, bool)
    if sbatch is not None and (not isinstance(sbatch, dict) or not all(
            isinstance(k, str) and k.strip() and isinstance(v, values) for k, v in sbatch.items())):
        raise ConfigurationError("sweep.slurm.sbatch must map sbatch option names (no dashes) to values, e.g. "
                                 f"{{account: lab, qos: high}}; got {sbatch!r}")
    if setup is not None and (isinstance(setup, str) or not isinstance(setup, (list, tuple))
                              or not all(isinstance(line, str) for line in setup)):
        raise ConfigurationError(f"sweep.slurm.setup must be a list of shell lines, got {setup!r}")


class SlurmExecutor(Executor):
    """Run each `submit`'s jobs as one SLURM job array (submitit), one array task per run.

    Args:
        resources: what each run needs: ``--cpus-per-task`` and ``--gpus-per-node`` of its task.
        folder: where submitit keeps its files (batch scripts, pickled jobs and results, its logs); it must be on a
            filesystem the nodes share.
        partition: the partition to run on (default: the cluster's default partition).
        time_min: each run's time limit in minutes (``--time``); default 60.
        array_parallelism: at most this many runs of an array at once (default: all of them).
        mem_gb: memory per run in GB (``--mem``; default: the partition's default).
        sbatch: more ``sbatch`` options, ``{option: value}`` without the dashes (``{"account": "lab",
            "qos": "high"}``; a value of true gives a bare flag).
        setup: shell lines the batch script runs before the run (``module load ...``, ``source venv/bin/activate``).
    """

    name = "slurm"

    def __init__(self, resources: Resources | None = None, folder: str | Path | None = None, *,
                 partition: str | None = None, time_min: int = 60, array_parallelism: int | None = None,
                 mem_gb: float | None = None, sbatch: dict | None = None, setup: Sequence[str] | None = None,
                 **unknown):
        if unknown:
            raise ConfigurationError(f"sweep.slurm: unknown setting(s) {sorted(unknown)}; the settings are "
                                     f"{list(OPTIONS)}")
        _check_options(partition, time_min, array_parallelism, mem_gb, sbatch, setup)
        self.time_min, self.array_parallelism = time_min, array_parallelism
        self.resources = resources or Resources()
        self.folder = Path(folder if folder is not None else "slurm").absolute()
        self.partition, self.mem_gb = partition, mem_gb
        self.sbatch = {k.strip().lstrip("-"): v for k, v in (sbatch or {}).items()}
        self.setup = list(setup or [])
        self._queue = _Queue()
        self._submitit = None

    def check(self, jobs: Sequence[Job], tracking_uri: str | None = None) -> None:
        """Refuse, before anything is submitted: no SLURM commands here, a partition that does not exist, runs that
        need more CPUs than its nodes have, and a tracking store on this machine's disk when the partition has more
        than one node (the runs on the other nodes could not reach it)."""
        missing = [name for name in _CLIENTS if shutil.which(name) is None]
        if missing:
            raise ConfigurationError(f"--executor slurm: SLURM is not reachable from this machine "
                                     f"({', '.join(missing)} not found on PATH); run the sweep on a machine of the "
                                     "cluster (a login node) or choose another executor")
        partitions, default = _partitions()
        partition = self.partition or default
        if partition is None or partition not in partitions:
            said = f"no partition {self.partition!r}" if self.partition else "no default partition"
            raise ConfigurationError(f"sweep.slurm.partition: this cluster has {said}; its partitions are "
                                     f"{sorted(partitions)}")
        nodes, cpus = partitions[partition]
        if cpus and self.resources.cpus > cpus:
            raise ConfigurationError(f"runs need {self.resources.cpus} CPUs each (the sweep's resources) but the "
                                     f"nodes of partition {partition!r} have at most {cpus}")
        if nodes > 1 and _local_store(tracking_uri):
            raise ConfigurationError(f"the tracking URI {tracking_uri!r} is a store on this machine's disk, which "
                                     f"runs on the other nodes of partition {partition!r} ({nodes} nodes) cannot "
                                     "reach; use an MLflow server (mlflow server ..., then the tracking URI "
                                     "http://<host>:<port>)")

    def _executor(self):
        if self._submitit is None:
            import submitit

            executor = submitit.SlurmExecutor(folder=self.folder)
            params: dict = {"job_name": "lightning-scaling", "time": self.time_min,
                            "cpus_per_task": self.resources.cpus, "stderr_to_stdout": True}
            optional = {"partition": self.partition, "array_parallelism": self.array_parallelism,
                        "gpus_per_node": self.resources.gpus or None, "setup": self.setup or None,
                        "additional_parameters": self.sbatch or None,
                        "mem": None if self.mem_gb is None else f"{max(1, round(self.mem_gb * 1024))}MB"}
            params.update({k: v for k, v in optional.items() if v is not None})
            executor.update_parameters(**params)
            self._submitit = executor
        return self._submitit

    def submit(self, jobs: Sequence[Job]) -> list[Handle]:
        """Submit `jobs` as one job array (a single job as one job)."""
        if not jobs:
            return []
        from submitit.core.utils import FailedJobError, FailedSubmissionError

        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            submitted = self._executor().map_array(run_job, list(jobs))
        except (FailedJobError, FailedSubmissionError) as err:  # sbatch refused: the options, the partition
            raise ConfigurationError(f"sweep.slurm: sbatch refused the job array: {str(err).strip()}") from None
        return [_SlurmHandle(job, one, self._queue, self.time_min) for job, one in zip(jobs, submitted)]
