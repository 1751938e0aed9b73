"""LightningCLI adapters: a config-saving callback that works with MLflow, and the `train` command's CLI class.

LightningCLI's own `SaveConfigCallback` writes `config.yaml` into `trainer.log_dir` and asserts that it exists;
with an MLflow logger on sqlite or HTTP there is no log directory and the run crashes before training. Here the
resolved configuration is logged as the run's artifact `config.yaml` instead (and written into the log directory
when a logger has one). `ScalingCLI` is LightningCLI with that callback, and with this package's configuration
errors reported as one line naming the field rather than a traceback.

Both Lightning namespaces: `MLflowSaveConfigCallback` is a `SaveConfigCallback` of every installed namespace (like
the callbacks), and `scaling_cli(namespace)` builds the CLI class of either. `lightning-scaling train` picks the
namespace the config's model class belongs to (`model.class_path` in the YAML or on the command line), so a
`pytorch_lightning.LightningModule` trains under `pytorch_lightning`'s CLI and a `lightning.pytorch` one under
`lightning.pytorch`'s; the callbacks' ``class_path``s are the same in both.
"""

from __future__ import annotations

import importlib
import inspect
import os
import socket
import sys
from pathlib import Path

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.integrations.family import module_search_path
from lightning_scaling.integrations.lightning import INSTALLED, cli_module, namespace_of
from lightning_scaling.integrations.loggers import (
    claim_run,
    keep_credentials_out_of_output,
    open_mlflow_runs,
    run_id_of,
)
from lightning_scaling.runs.secrets import redact

_SAVE_BASES = tuple(cli_module(name).SaveConfigCallback for name in INSTALLED)
_SaveConfigBase = _SAVE_BASES[0] if len(_SAVE_BASES) == 1 else type("SaveConfigCallback", _SAVE_BASES, {})


class MLflowSaveConfigCallback(_SaveConfigBase):
    """Log the resolved LightningCLI config as `config.yaml`: an MLflow artifact, or a file in the log dir."""

    def __init__(self, parser, config, config_filename: str = "config.yaml", overwrite: bool = False,
                 multifile: bool = False, save_to_log_dir: bool = False):
        super().__init__(parser, config, config_filename, overwrite, multifile, save_to_log_dir=False)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        # a tracking URI with a password in it (`http://user:secret@host`) is saved without the password
        text = redact(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            run_id = run_id_of(logger)
            experiment = getattr(logger, "experiment", None)
            if run_id and hasattr(experiment, "log_text"):
                experiment.log_text(run_id, text, self.config_filename)
            elif getattr(logger, "log_dir", None):
                os.makedirs(logger.log_dir, exist_ok=True)
                with open(os.path.join(logger.log_dir, self.config_filename), "w") as fh:
                    fh.write(text)


_CLI_CLASSES: dict[str, type] = {}


def scaling_cli(namespace: str | None = None) -> type:
    """LightningCLI of `namespace` ("lightning.pytorch" or "pytorch_lightning") with `MLflowSaveConfigCallback`."""
    namespace = namespace or INSTALLED[0]
    if namespace not in _CLI_CLASSES:
        base = cli_module(namespace).LightningCLI

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("save_config_callback", MLflowSaveConfigCallback)
            base.__init__(self, *args, **kwargs)

        def before_fit(self):
            # runs of a team started together on a new experiment: open each MLflow run with a retry, before
            # Lightning opens it without one (see `open_mlflow_runs`)
            keep_credentials_out_of_output(self.trainer)
            if self.trainer.is_global_zero:
                open_mlflow_runs(self.trainer)
                for logger in self.trainer.loggers:  # who trains it: a sweep tells a live run from a killed one
                    claim_run(logger, f"{socket.gethostname()}:{os.getpid()}")

        _CLI_CLASSES[namespace] = type("ScalingCLI", (base,), {
            "__init__": __init__, "before_fit": before_fit, "__module__": __name__,
            "__doc__": f"{namespace}'s LightningCLI with `MLflowSaveConfigCallback`; this package's callbacks are "
                       "configured under `trainer.callbacks` with `class_path: lightning_scaling.callbacks.<Name>`.",
        })
    return _CLI_CLASSES[namespace]


#: LightningCLI of the preferred installed namespace, with `MLflowSaveConfigCallback`.
ScalingCLI = scaling_cli()


def model_namespace(argv: list[str]) -> str | None:
    """The Lightning namespace of the model class a `train` command line names, or None when it names none.

    Reads `--model.class_path=X` / `--model X` / `--model=X` from the arguments and `model: class_path:` from the
    `--config` files (the last one given wins, as in LightningCLI).
    """
    class_path = None
    for i, arg in enumerate(argv):
        value = None
        if arg in ("--config", "-c") and i + 1 < len(argv):
            model = _config_file(argv[i + 1]).get("model")
            value = model.get("class_path") if isinstance(model, dict) else (model if isinstance(model, str) else None)
        elif arg.startswith("--model.class_path=") or arg.startswith("--model="):
            value = arg.split("=", 1)[1]
        elif arg in ("--model", "--model.class_path") and i + 1 < len(argv):
            value = argv[i + 1]
        if value and "." in value and not value.strip().startswith("{"):
            class_path = value.strip()
    if class_path is None:
        return None
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return None  # LightningCLI reports the bad class_path
    return namespace_of(cls)


#: `lightning-scaling train`'s own options, read before LightningCLI sees the rest.
TRAIN_OPTIONS = ("--module-path", "--checkpoint-dir")


def split_train_options(argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """(`TRAIN_OPTIONS` given, as option -> values; the other arguments, for LightningCLI)."""
    own: dict[str, list[str]] = {name: [] for name in TRAIN_OPTIONS}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name in own:
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigurationError(f"{name} needs a value (a folder)")
                value, i = argv[i + 1], i + 1
            own[name].append(value)
        else:
            rest.append(argv[i])
        i += 1
    return own, rest


def check_importable(argv: list[str], search: list[str]) -> None:
    """Import the model and data classes the arguments name; a module that cannot be found is a
    `ConfigurationError` saying where `train` looked and what to do."""
    for class_path in _class_paths(argv):
        module_name = class_path.rpartition(".")[0]
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            top = module_name.split(".")[0]
            raise ConfigurationError(
                f"cannot import `{class_path}`: {err}. `lightning-scaling train` imports a config's classes from "
                f"the working directory and from --module-path (looked in: {', '.join(search)}); run it from the "
                f"folder that holds `{top}/`, or add --module-path FOLDER") from None


def _config_file(path: str) -> dict:
    """A `--config` file's mapping, or {} when it cannot be read (LightningCLI reports that with its own message)."""
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _class_paths(argv: list[str]) -> list[str]:
    """The model's and data module's ``class_path`` in the `--config` files of `argv`."""
    found = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            config = _config_file(argv[i + 1])
            for key in ("model", "data"):
                section = config.get(key)
                value = section.get("class_path") if isinstance(section, dict) else None
                if isinstance(value, str) and "." in value:
                    found.append(value.strip())
    return found


def checkpointing(folder: str, namespace: str | None) -> tuple[list[str], dict, str | None]:
    """What `--checkpoint-dir FOLDER` adds: (arguments, trainer defaults, the checkpoint to resume from or None).
    The run keeps FOLDER/last.ckpt up to date at each validation and resumes from it when it exists (a run killed
    and started again goes on where it stopped; its MLflow run id is the caller's to keep, e.g.
    ``--trainer.logger.init_args.run_id``)."""
    module = importlib.import_module(f"{namespace or INSTALLED[0]}.callbacks")
    last = Path(folder) / "last.ckpt"
    args = ["--trainer.enable_checkpointing=true"]
    # the latest checkpoint at each validation (no monitor: top-1 is the latest) and last.ckpt a link to it; with
    # save_top_k=0 Lightning would write last.ckpt only at the end of training
    callback = module.ModelCheckpoint(dirpath=folder, save_top_k=1, save_last="link")
    return args, {"callbacks": [callback]}, (str(last) if last.exists() else None)


def run_cli(args: list[str] | None = None) -> int:
    """`lightning-scaling train ...`: run ScalingCLI's `fit`; configuration errors exit 2 with the message.

    Besides LightningCLI's arguments it takes `--module-path FOLDER` (repeatable: where the config's classes are
    imported from, before the working directory) and `--checkpoint-dir FOLDER` (see `checkpointing`).
    """
    argv = list(sys.argv[1:] if args is None else args)
    saved_argv, saved_path = sys.argv, list(sys.path)
    try:
        own, argv = split_train_options(argv)
        search = module_search_path(own["--module-path"])
        sys.path[:0] = [p for p in search if p not in sys.path]
        if not argv or argv[0] not in ("fit", "validate", "test", "predict"):
            argv = ["fit", *argv]
        check_importable(argv[1:], search)
        namespace = model_namespace(argv[1:])
        sys.argv = sys.argv[:1]  # LightningCLI warns when given both `args` and command-line arguments
        if own["--checkpoint-dir"]:
            _fit_resumable(argv, own["--checkpoint-dir"][-1], namespace)
        else:
            scaling_cli(namespace)(args=argv)
    except Exception as err:  # jsonargparse wraps errors raised while instantiating a class: find ours
        cause = _configuration_error(err)
        if cause is None:
            raise
        print(redact(f"lightning-scaling train: error: {cause}"), file=sys.stderr)
        return 2
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
    return 0


def _fit_resumable(argv: list[str], folder: str, namespace: str | None) -> None:
    """`fit` with `checkpointing(folder)`. The checkpoint goes to `Trainer.fit` itself: LightningCLI's own
    ``--ckpt_path`` reads it first with ``torch.load(weights_only=True)``, which refuses the callbacks' typed
    settings saved in it. It is loaded in full (``weights_only=False``): it is this run's own checkpoint, written
    into `folder` by this same command, not a file from elsewhere."""
    if argv[0] != "fit":
        raise ConfigurationError(f"--checkpoint-dir goes with `fit`, not `{argv[0]}`")
    extra, defaults, resume = checkpointing(folder, namespace)
    cli = scaling_cli(namespace)(args=argv[1:] + extra, trainer_defaults=defaults, run=False)
    cli.before_fit()
    kwargs = {"weights_only": False} if "weights_only" in inspect.signature(cli.trainer.fit).parameters else {}
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume, **kwargs)


def _configuration_error(err: BaseException | None) -> ConfigurationError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ConfigurationError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
