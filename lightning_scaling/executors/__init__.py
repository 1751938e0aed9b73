"""Execution engines: where a sweep's runs train (an adapter over an existing scheduler each).

- `base`: the interface (`Job`, `Resources`, `Outcome`, `Handle`, `Executor`, `as_completed`) and `run_job`, the
  function every engine runs on its node.
- `local`: K worker processes on this machine (the default).
- `slurm`: one submitit job array per stage (extra ``lightning-scaling[slurm]``).
- `ray`: one Ray task per run (extra ``lightning-scaling[ray]``).
- `registry`: the engines by name, with those plugins register (`register_executors`).
"""

from lightning_scaling.executors.base import Executor, Handle, Job, Outcome, Resources, as_completed, run_job
from lightning_scaling.executors.local import LocalExecutor, default_workers
from lightning_scaling.executors.registry import BUILTIN_EXECUTORS, executor_names, make_executor

__all__ = [
    "BUILTIN_EXECUTORS",
    "Executor",
    "Handle",
    "Job",
    "LocalExecutor",
    "Outcome",
    "Resources",
    "as_completed",
    "default_workers",
    "executor_names",
    "make_executor",
    "run_job",
]
