"""The sweep's settings: the `sweep:` section of a YAML file, or a model family's config and the command line.

One file can describe the family, the budget and where runs go::

    sweep:
      family: config.yaml              # the LightningCLI config of the model family (relative to this file)
      target_flops: 1e13               # the run to size in the end (C = 6 N D)
      budget: 2.5e12                   # compute of all small runs together
      executor: local                  # local | slurm | ray | a plugin's engine
      workers: 2                       # local: runs at once (default: as many as the cores allow)
      cpus_per_run: 1
      gpus_per_run: 0
      tracking_uri: sqlite:///mlflow.db   # default: the family's MLFlowLogger
      experiment: tiny-gpt-sweep          # default: the family's MLFlowLogger
      overrides: [--data.init_args.batch_size=8]   # LightningCLI arguments added to every run
      plan: {first_share: 0.4, first_groups: 3, group_size: 5, min_steps: 40, bootstrap: 200}
      plugins: [examples.tiny_gpt.WidthFamily]     # registered in the sweep's process (e.g. the family's sizes)
      sparse: config_sparse.yaml       # the first stage adds one run pruned as this config says
      slurm: {partition: gpu, time_min: 120, sbatch: {account: team}}
      ray: {address: auto}

Without a `sweep:` section the file is the family's config itself and the command line gives the rest
(``--target-flops``, ``--budget``, ...). Command-line values win over the YAML's.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.integrations.family import module_search_path, read_yaml_mapping
from lightning_scaling.options import check_int, check_positive
from lightning_scaling.planner.options import FIRST_GROUPS, FIRST_SHARE, GROUP_SIZE, MIN_STEPS, PLAN_BOOTSTRAP

__all__ = ["PLAN_KEYS", "SweepConfig", "load_sweep_config"]

#: `plan:` keys -> their defaults (`planner.StageOptions`; `bootstrap` is its `n_bootstrap`).
PLAN_KEYS = {"first_share": FIRST_SHARE, "first_groups": FIRST_GROUPS, "group_size": GROUP_SIZE,
             "min_steps": MIN_STEPS, "bootstrap": PLAN_BOOTSTRAP, "seed": 0, "confidence": 0.8}
ENGINE_SECTIONS = ("local", "slurm", "ray")


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep needs (module docstring); `folder` holds its logs and checkpoints (default
    ``sweeps/<experiment>`` in the working directory)."""

    family: Path
    target_flops: float
    budget: float
    executor: str = "local"
    workers: int | None = None
    cpus_per_run: int = 1
    gpus_per_run: int = 0
    tracking_uri: str | None = None
    experiment: str | None = None
    overrides: tuple[str, ...] = ()
    plan: dict = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    sparse: str | None = None
    engine: dict = field(default_factory=dict)
    folder: Path | None = None
    module_path: tuple[str, ...] = ()
    train_target: bool = False
    target_steps_max: int | None = None

    def plan_option(self, key: str):
        return self.plan.get(key, PLAN_KEYS[key])

    def run_folder(self) -> Path:
        return Path(self.folder) if self.folder else Path("sweeps") / (self.experiment or "sweep")


def load_sweep_config(path: str | os.PathLike, **given) -> SweepConfig:
    """The sweep of the YAML at `path` with the command line's values (`given`, None for not given) on top.

    Raises:
        ConfigurationError: an unknown key (the message lists the known ones), a value of the wrong kind, or a
            missing target or budget.
    """
    path = Path(path)
    data = read_yaml_mapping(path, "a mapping (a `sweep:` section, or a LightningCLI config with `model`, `data` "
                                   "and `trainer`)")
    section = data.get("sweep")
    if section is None:
        section = {"family": str(path)}
    elif not isinstance(section, dict):
        raise ConfigurationError(f"--config {path}: `sweep` must be a mapping of the sweep's settings")
    else:
        section = dict(section)
        if "family" not in section:
            raise ConfigurationError(f"--config {path}: `sweep.family` is missing: the LightningCLI config of the "
                                     "model family to train (a path relative to this file)")
        section["family"] = str(path.parent / section["family"])
        if isinstance(section.get("sparse"), str):
            section["sparse"] = str(path.parent / section["sparse"])
    section.update({k: v for k, v in given.items() if v is not None and v is not False})
    return _config(section)


def _config(section: dict) -> SweepConfig:
    names = {f.name for f in fields(SweepConfig)} - {"engine"}
    engines = {k: section.pop(k) for k in list(section) if k in ENGINE_SECTIONS}
    unknown = sorted(set(section) - names)
    if unknown:
        known = sorted(names | set(ENGINE_SECTIONS))
        raise ConfigurationError(f"sweep: unknown key(s) {unknown}; the keys are {known}")
    for key in ("target_flops", "budget"):
        if section.get(key) is None:
            raise ConfigurationError(f"sweep.{key} is missing: give it in the YAML's `sweep:` section or as "
                                     f"--{key.replace('_', '-')}")
        section[key] = check_positive(section[key], f"sweep.{key}")
    if section["budget"] >= section["target_flops"]:
        raise ConfigurationError(f"sweep.budget ({section['budget']:.3g}) must be below sweep.target_flops "
                                 f"({section['target_flops']:.3g}): the small runs are there to size the target run")
    executor = str(section.get("executor", "local"))
    engine = engines.get(executor) or {}
    if not isinstance(engine, dict):
        raise ConfigurationError(f"sweep.{executor} must be a mapping of the executor's settings")
    plan = section.get("plan") or {}
    if not isinstance(plan, dict) or set(plan) - set(PLAN_KEYS):
        raise ConfigurationError(f"sweep.plan: the keys are {sorted(PLAN_KEYS)}, got {plan!r}")
    least = {"workers": 1, "target_steps_max": 1, "cpus_per_run": 1, "gpus_per_run": 0}
    for key, low in least.items():
        if section.get(key) is not None:
            section[key] = check_int(section[key], f"sweep.{key}", low)
    for key in ("overrides", "plugins", "module_path"):
        value = section.get(key) or ()
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise ConfigurationError(f"sweep.{key} must be a list of strings, got {value!r}")
        section[key] = tuple(value)
    sparse = section.get("sparse")
    if sparse is not None and not isinstance(sparse, str):
        raise ConfigurationError(f"sweep.sparse must be the path of the pruned run's config (the family's config with "
                                 f"GradualPruning), got {sparse!r}")
    return SweepConfig(**{**section, "executor": executor, "engine": engine, "plan": plan,
                          "family": Path(section["family"])})


def register_plugins(names: tuple[str, ...], module_path: tuple[str, ...] = ()) -> list[tuple[object, str]]:
    """Import each ``module.attribute`` of `names` (from `module_path` and the working directory, as
    `lightning-scaling train` imports a family's classes), instantiate it when it is a class, and register it with
    the plugin manager; returns (plugin, name) pairs, to unregister when the sweep ends."""
    import sys

    from lightning_scaling import plugins

    for folder in module_search_path(list(module_path)):
        if folder not in sys.path:
            sys.path.append(folder)

    pm = plugins.plugin_manager()
    registered = []
    for name in names:
        module_name, _, attr = name.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as err:
            raise ConfigurationError(f"sweep.plugins: cannot import {name!r}: {err}") from None
        plugin = obj() if isinstance(obj, type) else obj
        if pm.get_plugin(name) is None:
            pm.register(plugin, name=name)
            registered.append((plugin, name))
    return registered
