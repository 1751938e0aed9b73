"""The sweep: plan a stage, train its runs on an executor, refit, and plan the next, until the budget is spent; then
recommend (and, when asked, train) the target run. `lightning-scaling sweep` is `run_sweep`.

- `config`: the settings (a YAML `sweep:` section, or a family config and the command line).
- `state`: the sweep's runs in the run store (their stage and plan as MLflow tags): what lets it go on after any stop.
- `planning`: the family as the runs train it, the next stage, the compute stopped runs give back, the refit.
- `jobs`: a planned run as the `executors.Job` that trains it (`lightning-scaling train`, a checkpoint, a log).
- `loop`: the loop (`Sweep`), with resume-or-retry of failed runs.
- `console`: the lines it prints; `target`: the target run of `--train-target`.
"""

from __future__ import annotations

from lightning_scaling.sweep.config import SweepConfig, load_sweep_config
from lightning_scaling.sweep.loop import MAX_ATTEMPTS, Sweep, SweepResult
from lightning_scaling.sweep.state import SweepRun, SweepState

__all__ = ["MAX_ATTEMPTS", "Sweep", "SweepConfig", "SweepResult", "SweepRun", "SweepState", "load_sweep_config",
           "run_sweep"]


def run_sweep(config: SweepConfig, out=None) -> SweepResult:
    """Build the executor `config` names and run the sweep to its end (or to the first bad input, raised as
    `ConfigurationError` before anything is submitted)."""
    from lightning_scaling.executors import Resources, make_executor

    resources = Resources(cpus=config.cpus_per_run, gpus=config.gpus_per_run)
    options = dict(config.engine)
    if config.executor == "local" and config.workers is not None:
        options.setdefault("workers", config.workers)
    sweep = Sweep(config, None, out)
    try:
        with make_executor(config.executor, resources, sweep.config.run_folder() / config.executor,
                           options) as executor:
            sweep.executor = executor
            return sweep.run()
    finally:
        sweep.planner.close()
