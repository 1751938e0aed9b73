"""`local`: K worker processes on this machine, each training one run at a time (`concurrent.futures`).

Each job runs as its own child process (`run_job`); a pool of K threads keeps K of them going. The default K is as
many as the cores allow at the CPUs a run uses (`os.sched_getaffinity`), or, on a machine with GPUs, as many as
there are GPUs for the GPUs a run uses; each worker then gets its own devices (``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.executors.base import Executor, Handle, Job, Outcome, Resources, run_job

__all__ = ["LocalExecutor", "default_workers", "visible_gpus"]


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else the devices ``nvidia-smi`` lists (no
    torch import: the sweep's own process stays light)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [d for d in given.split(",") if d.strip() and d.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def default_workers(resources: Resources, gpus: Sequence[str] | None = None) -> int:
    """As many workers as the GPUs allow at `resources.gpus` each (when a run uses GPUs and there are some), else
    as many as the cores allow at `resources.cpus` each; at least one."""
    gpus = visible_gpus() if gpus is None else list(gpus)
    if resources.gpus and gpus:
        return max(1, len(gpus) // resources.gpus)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, resources.cpus))


class _LocalHandle(Handle):
    def __init__(self, job: Job, future: Future, processes: dict):
        self.job, self._future, self._processes = job, future, processes

    def done(self) -> bool:
        return self._future.done()

    def outcome(self) -> Outcome:
        return self._future.result()

    def cancel(self) -> None:
        if not self._future.cancel():
            proc = self._processes.get(self.job.name)
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)


class LocalExecutor(Executor):
    """Run jobs as child processes of this one, `workers` at a time.

    Args:
        workers: runs at once (default `default_workers`).
        resources: what each run needs (its CPUs are its threads; with GPUs, each worker gets its own).
        folder: unused (the runs' logs are the jobs' own files); every executor factory takes it.
    """

    name = "local"

    def __init__(self, workers: int | None = None, resources: Resources | None = None, folder=None):
        resources = resources or Resources()
        gpus = visible_gpus() if resources.gpus else []
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
            raise ConfigurationError(f"`workers` must be a positive integer, got {workers!r}")
        self.resources = resources
        self.workers = workers or default_workers(resources, gpus)
        if resources.gpus and len(gpus) < self.workers * resources.gpus:
            raise ConfigurationError(f"`workers` = {self.workers} runs of {resources.gpus} GPU(s) each need "
                                     f"{self.workers * resources.gpus} GPUs; this machine has {len(gpus)} "
                                     f"({', '.join(gpus) or 'none'})")
        self._slots: queue.Queue = queue.Queue()
        for i in range(self.workers):  # each worker's devices, handed to the run it starts
            self._slots.put(gpus[i * resources.gpus:(i + 1) * resources.gpus] if resources.gpus else None)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="lightning-scaling-worker")
        self._processes: dict[str, subprocess.Popen] = {}

    def submit(self, jobs: Sequence[Job]) -> list[Handle]:
        return [_LocalHandle(job, self._pool.submit(self._run, job), self._processes) for job in jobs]

    def _run(self, job: Job) -> Outcome:
        devices = self._slots.get()
        extra = {"CUDA_VISIBLE_DEVICES": ",".join(devices)} if devices is not None else None
        try:
            return run_job(job, extra, on_start=lambda proc: self._processes.__setitem__(job.name, proc),
                           new_session=True)
        finally:
            self._slots.put(devices)
            self._processes.pop(job.name, None)

    def close(self) -> None:
        for proc in list(self._processes.values()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        self._pool.shutdown(wait=True, cancel_futures=True)
