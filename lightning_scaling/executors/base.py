"""The executor interface: where a sweep's runs train.

A sweep hands each stage's runs to an executor as `Job`s: a run's command line, the file its output goes to, and
the resources it needs. `Executor.submit(jobs)` returns one `Handle` per job to wait on; `Handle.outcome()` blocks
until the run's process has ended and returns an `Outcome` (its exit status and, when it failed, why). Every engine
runs the same function on its node, `run_job`: the command as a child process, its output appended to the job's log
file. So a run behaves alike under every engine, and a killed run (SIGKILL, a time limit, a dead worker) is an
`Outcome` with a reason, never an exception.

The engines are adapters over existing schedulers, never a scheduler of this package's own: `local` (a pool of
worker processes on this machine, `concurrent.futures`), `slurm` (submitit job arrays) and `ray` (Ray tasks). A
third-party engine is a class implementing `Executor`, registered through the `register_executors` plugin hook.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

__all__ = ["Executor", "Handle", "Job", "Outcome", "Resources", "as_completed", "run_job"]


@dataclass(frozen=True)
class Resources:
    """What one run needs: CPU cores (also its threads: ``OMP_NUM_THREADS``) and GPUs."""

    cpus: int = 1
    gpus: int = 0


@dataclass(frozen=True)
class Job:
    """One run to train: `argv` (a command line) run in `cwd` with `env` added to the environment, stdout and
    stderr appended to the file `log`."""

    name: str
    argv: tuple[str, ...]
    log: str
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = Resources()


@dataclass(frozen=True)
class Outcome:
    """How a job ended: the process's exit status (None when it never ran) and, when it failed, why."""

    name: str
    returncode: int | None
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def describe_exit(returncode: int | None) -> str | None:
    """Why a process with this exit status failed (None: it succeeded)."""
    if returncode == 0:
        return None
    if returncode is None:
        return "the process never ran"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit status {returncode}"


def run_job(job: Job, extra_env: Mapping[str, str] | None = None, on_start=None,
            new_session: bool = False) -> Outcome:
    """Run `job` to completion on this machine (what every engine runs on its node); never raises for a failed run.

    The child gets ``OMP_NUM_THREADS`` = the job's CPUs unless the job's `env` sets it, so that K runs side by side
    do not each start one thread per core of the machine. `extra_env` is added on top (an engine's own: the local
    workers' devices); `on_start(process)` is told the child once it runs (to cancel it); `new_session` starts it in
    its own process group (so that cancelling it stops its children too).
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, job.resources.cpus)), **job.env, **(extra_env or {})}
    start = time.monotonic()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(job.log)), exist_ok=True)
        with open(job.log, "ab") as log:
            proc = subprocess.Popen(list(job.argv), cwd=job.cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=new_session)
            if on_start is not None:
                on_start(proc)
            returncode = proc.wait()
    except OSError as err:  # the command or the folder does not exist on this node
        return Outcome(job.name, None, time.monotonic() - start, f"could not start: {err}")
    return Outcome(job.name, returncode, time.monotonic() - start, describe_exit(returncode))


class Handle(ABC):
    """A submitted job: ask whether it has ended, wait for its `Outcome`, or cancel it."""

    job: Job

    @abstractmethod
    def done(self) -> bool:
        """Whether the job has ended (without waiting)."""

    @abstractmethod
    def outcome(self) -> Outcome:
        """Wait for the job to end and say how; an engine's own failure (a lost node, a dead worker) is an
        `Outcome` with its reason, not an exception."""

    def cancel(self) -> None:  # noqa: B027  (an engine that cannot cancel keeps this default)
        """Stop the job if the engine can (the default: it cannot; the job runs to its end)."""


class Executor(ABC):
    """An engine that runs jobs: `submit` them, wait on the handles, `close` when the sweep ends.

    `check(jobs)` is called before anything is submitted; it raises `ConfigurationError` naming the setting at fault
    (a partition that does not exist, a tracking URI the nodes cannot reach) so that bad input stops the sweep
    before it spends compute.
    """

    name: ClassVar[str] = ""

    def check(self, jobs: Sequence[Job], tracking_uri: str | None = None) -> None:  # noqa: B027  (nothing to check)
        """Refuse what cannot run on this engine (default: accept)."""

    @abstractmethod
    def submit(self, jobs: Sequence[Job]) -> list[Handle]:
        """Start `jobs` (or queue them); one handle per job, in order."""

    def close(self) -> None:  # noqa: B027  (an engine with nothing to release keeps this default)
        """Release the engine's resources (worker pools, cluster connections)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def as_completed(handles: Iterable[Handle], poll: float = 0.2) -> Iterator[Handle]:
    """Yield `handles` as their jobs end, first finished first (polling `done()` every `poll` seconds)."""
    pending = list(handles)
    while pending:
        finished = [h for h in pending if h.done()]
        for h in finished:
            pending.remove(h)
            yield h
        if not finished:
            time.sleep(poll)
