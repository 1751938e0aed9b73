"""From a planned run to the job that trains it: `lightning-scaling train` with the family's config, the run's size,
length and MLflow run id, a checkpoint folder to resume from and a log file, as one `executors.Job`.

The command is the one `plan --config` prints for the run (`integrations.train_command`), run with this
interpreter (``python -m lightning_scaling.cli``: the nodes of a cluster share the environment, not the PATH) and
with the sweep's additions: the MLflow run to log into, the checkpoint folder, and where the family's classes are
imported from (the sweep's working directory, and `sweep.module_path`).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from lightning_scaling.executors import Job, Resources
from lightning_scaling.integrations import module_search_path, train_command

__all__ = ["RunFiles", "job_for"]


class RunFiles:
    """Where a run's files live: ``<sweep folder>/runs/<name>/`` with ``train.log`` and ``checkpoints/``."""

    def __init__(self, folder: Path, name: str):
        self.root = Path(folder).resolve() / "runs" / name
        self.log = self.root / "train.log"
        self.checkpoints = self.root / "checkpoints"

    @property
    def resumable(self) -> bool:
        """Whether the run left a checkpoint to resume from."""
        return (self.checkpoints / "last.ckpt").exists()


def job_for(planned: dict, run_id: str, family: dict, config, resources: Resources) -> Job:
    """The job that trains `planned` (a run of a stage's plan) into the MLflow run `run_id`, for the sweep
    `config` (`sweep.config.SweepConfig`) of the model family `family` (`integrations.read_family`)."""
    command = train_command(family, config.tracking_uri, config.experiment)
    files = RunFiles(config.run_folder(), planned["name"])
    args = shlex.split(command(planned))[2:]  # without `lightning-scaling train`
    argv = [sys.executable, "-m", "lightning_scaling.cli", "train"]
    for path in module_search_path(list(config.module_path)):
        argv += ["--module-path", path]
    argv += ["--checkpoint-dir", str(files.checkpoints), *args, *config.overrides,
             f"--trainer.logger.init_args.run_id={run_id}"]
    return Job(name=planned["name"], argv=tuple(argv), log=str(files.log), cwd=os.getcwd(), resources=resources)
