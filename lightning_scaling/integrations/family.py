"""A model family from a LightningCLI config: the size knobs and the run settings a plan needs.

`read_family(path)` reads the YAML `lightning-scaling train --config` takes and returns what `planner.stages`
needs to turn a planned (N, D) into a run: the model's ``init_args`` (the knobs `propose_architecture` reads, e.g.
``d_model``, ``n_layer``, ``n_head``), the tokens per optimizer step (``data.init_args.batch_size`` x
``seq_len`` when the data module has both, times the devices' count when given), which of this package's callbacks
the config lists (muP and PowerLR settings transfer; see `planner.family.hyperparameters`), and a builder of the
command line that trains a planned run.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from lightning_scaling.errors import ConfigurationError

SIZE_KNOBS = ("d_model", "n_layer", "n_head")


def module_search_path(module_paths: list[str]) -> list[str]:
    """Where a family's classes are imported from (`lightning-scaling train`, and a sweep's plugins): the
    `--module-path` folders, then the working directory (as ``python -m`` does: a console script does not put it
    on the import path)."""
    return [str(Path(p).resolve()) for p in module_paths] + [os.getcwd()]


def read_yaml_mapping(path, expected: str) -> dict:
    """The YAML mapping in `path` (a `--config` file).

    Raises:
        ConfigurationError: the file cannot be read, is not valid YAML, or holds no mapping (`expected` says what
            it should hold).
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise ConfigurationError(f"--config {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ConfigurationError(f"--config {path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"--config {path}: expected {expected}")
    return data


def read_family(path) -> dict:
    """{"config", "model", "hparams", "tokens_per_step", "settings", "data", "logger", "advisor"} of a LightningCLI
    YAML (module docstring): ``data`` is the data module's ``init_args``, ``logger`` the logger's, ``advisor`` the
    `ScalingLawAdvisor`'s (None when the config lists none).

    Raises:
        ConfigurationError: the file is missing or not a YAML mapping, or it has no ``model.init_args``.
    """
    path = Path(path)
    config = read_yaml_mapping(path, "a mapping with `model`, `data` and `trainer` keys")
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("init_args"), dict):
        raise ConfigurationError(f"--config {path}: `model.init_args` is missing: the plan needs the model's size "
                                 f"knobs ({', '.join(SIZE_KNOBS)} for the built-in GPT proposal)")
    data = (config.get("data") or {}).get("init_args") or {}
    trainer = config.get("trainer") or {}
    tokens_per_step = None
    batch, seq = data.get("batch_size"), data.get("seq_len", model["init_args"].get("seq_len"))
    if isinstance(batch, int) and isinstance(seq, int) and batch > 0 and seq > 0:
        devices = trainer.get("devices")
        tokens_per_step = float(batch * seq * (devices if isinstance(devices, int) and devices > 0 else 1)
                                * (trainer.get("accumulate_grad_batches") or 1))
    settings, advisor = {}, None
    for cb in trainer.get("callbacks") or []:
        if not isinstance(cb, dict):
            continue
        name = str(cb.get("class_path", "")).rsplit(".", 1)[-1]
        args = cb.get("init_args") or {}
        if name == "ScalingLawAdvisor":
            advisor = dict(args)
        elif name == "MuP":
            settings["muP"] = f"base {args.get('base')}, hidden_init {args.get('hidden_init', 'fan_in')}"
        elif name == "PowerLR":
            settings["PowerLR"] = ", ".join(f"{k}={args[k]}" for k in ("a", "b", "lr_max", "warmup_tokens",
                                                                        "decay", "decay_fraction") if k in args)
    logger = trainer.get("logger")
    logger = (logger.get("init_args") or {}) if isinstance(logger, dict) else {}
    return {"config": str(path), "model": model.get("class_path"), "hparams": dict(model["init_args"]),
            "tokens_per_step": tokens_per_step, "settings": settings, "data": dict(data), "logger": dict(logger),
            "advisor": advisor}


def train_command(family: dict, tracking_uri: str | None = None, experiment: str | None = None):
    """`command(run)`: the `lightning-scaling train` line of a planned run of this family."""

    def command(run: dict) -> str:
        parts = ["lightning-scaling", "train", "--config", family["config"]]
        for key, value in (run.get("architecture") or {}).items():
            if key != "params":
                parts.append(f"--model.init_args.{key}={value}")
        if "steps" in run:
            parts += [f"--trainer.max_steps={run['steps']}",
                      f"--trainer.val_check_interval={run['val_check_interval']}"]
        parts.append(f"--trainer.logger.init_args.run_name={run['name']}")
        if tracking_uri:
            parts.append(f"--trainer.logger.init_args.tracking_uri={tracking_uri}")
        if experiment:
            parts.append(f"--trainer.logger.init_args.experiment_name={experiment}")
        return shlex.join(parts)

    return command
