"""LightningCLI adapters: a config-saving callback that works with MLflow, and the `train` command's CLI class.

LightningCLI's own `SaveConfigCallback` writes `config.yaml` into `trainer.log_dir` and asserts that it exists;
with an MLflow logger on sqlite or HTTP there is no log directory and the run crashes before training. Here the
resolved configuration is logged as the run's artifact `config.yaml` instead (and written into the log directory
when a logger has one). `ScalingCLI` is LightningCLI with that callback, and with this package's configuration
errors reported as one line naming the field rather than a traceback.
"""

from __future__ import annotations

import os
import sys

from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

from ..errors import ConfigurationError
from .loggers import run_id_of


class MLflowSaveConfigCallback(SaveConfigCallback):
    """Log the resolved LightningCLI config as `config.yaml`: an MLflow artifact, or a file in the log dir."""

    def __init__(self, parser, config, config_filename: str = "config.yaml", overwrite: bool = False,
                 multifile: bool = False, save_to_log_dir: bool = False):
        super().__init__(parser, config, config_filename, overwrite, multifile, save_to_log_dir=False)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        for logger in trainer.loggers:
            run_id = run_id_of(logger)
            experiment = getattr(logger, "experiment", None)
            if run_id and hasattr(experiment, "log_text"):
                experiment.log_text(run_id, text, self.config_filename)
            elif getattr(logger, "log_dir", None):
                os.makedirs(logger.log_dir, exist_ok=True)
                with open(os.path.join(logger.log_dir, self.config_filename), "w") as fh:
                    fh.write(text)


class ScalingCLI(LightningCLI):
    """LightningCLI with `MLflowSaveConfigCallback`; this package's callbacks are configured under
    `trainer.callbacks` with `class_path: lightning_scaling.callbacks.<Name>`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("save_config_callback", MLflowSaveConfigCallback)
        super().__init__(*args, **kwargs)


def run_cli(args: list[str] | None = None) -> int:
    """`lightning-scaling train ...`: run ScalingCLI's `fit`; configuration errors exit 2 with the message."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] not in ("fit", "validate", "test", "predict"):
        argv = ["fit", *argv]
    saved_argv = sys.argv
    sys.argv = sys.argv[:1]  # LightningCLI warns when given both `args` and command-line arguments
    try:
        ScalingCLI(args=argv)
    except Exception as err:  # jsonargparse wraps errors raised while instantiating a class: find ours
        cause = _configuration_error(err)
        if cause is None:
            raise
        print(f"lightning-scaling train: error: {cause}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved_argv
    return 0


def _configuration_error(err: BaseException | None) -> ConfigurationError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ConfigurationError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
