"""Make any Adam-like or SGD-like optimizer muP-correct, in place (Yang et al. 2022, Table 3).

`mup.MuAdam`/`MuAdamW`/`MuSGD` build a new optimizer from parameters. A LightningModule's `configure_optimizers`
already returned one, possibly with an LR scheduler bound to it, so instead we split its parameter groups the way
mup's optimizers would and put the new groups into the same optimizer object:

- Adam-like (Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad): hidden matrices (two width dimensions) get
  lr / width_mult and weight_decay x width_mult; vectors, embeddings and the readout keep the group's values.
- SGD-like (SGD, ASGD): vector-like parameters (one width dimension) get lr x width_mult and weight_decay /
  width_mult; matrices get lr / (fan_in_mult / fan_out_mult) and weight_decay x that ratio.

Every key of a group other than its parameters is carried over (learning-rate keys scaled: `lr`, `initial_lr`, and
OneCycleLR's `max_lr` / `min_lr`), so the learning rate of a group stays a multiple of the optimizer's default
learning rate: schedules such as `PowerLR` keep muP's per-group scaling. A scheduler already bound to the optimizer
keeps per-group lists, which are remapped to the new groups by name, never by length: learning rates
(`base_lrs`, `_last_lr`, CyclicLR's `max_lrs`, ReduceLROnPlateau's `min_lrs`) are taken from the source group and
scaled, per-group functions and momenta (LambdaLR's `lr_lambdas`, CyclicLR's momenta) are taken from the source
group, and the schedulers inside `SequentialLR` and `ChainedScheduler` are remapped in turn.
"""

from __future__ import annotations

from typing import get_args

import torch

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.options import Choice, OptimizerKind

ADAM_LIKE = ("Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "SparseAdam")
SGD_LIKE = ("SGD", "ASGD")
KINDS = get_args(OptimizerKind)


def optimizer_kind(optimizer: torch.optim.Optimizer, kind: str | None = None) -> str:
    if kind is not None:
        return Choice.of(OptimizerKind).check("optimizer_kind", kind)
    names = {c.__name__ for c in type(optimizer).__mro__}
    if names & set(ADAM_LIKE):
        return "adam"
    if names & set(SGD_LIKE):
        return "sgd"
    raise ConfigurationError(
        f"cannot tell how muP scales {type(optimizer).__name__}: pass MuP(optimizer_kind='adam') for optimizers "
        "that normalise the gradient entrywise (Adam-like) or 'sgd' for SGD-like ones"
    )


GROUP_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # group keys holding a learning rate
SCHEDULER_LR_LISTS = ("base_lrs", "_last_lr", "max_lrs", "min_lrs")  # per-group learning rates of a scheduler
SCHEDULER_GROUP_LISTS = ("lr_lambdas", "base_momentums", "max_momentums")  # per-group values, not rates
NESTED_SCHEDULERS = "_schedulers"  # SequentialLR, ChainedScheduler


def _scale_group(group: dict, lr_factor: float, wd_factor: float) -> dict:
    out = {k: v for k, v in group.items() if k != "params"}
    out["params"] = []
    for key in GROUP_LR_KEYS:
        if key in out:
            out[key] = out[key] * lr_factor
    if "weight_decay" in out:
        out["weight_decay"] = out["weight_decay"] * wd_factor
    return out


def _bucket(buckets: dict[tuple, tuple[dict, float]], group: dict, key: tuple, lr_factor: float,
            wd_factor: float) -> list:
    """The parameter list of `group`'s bucket `key`, made on first use (a dict keeps the order buckets appear in)."""
    if key not in buckets:
        buckets[key] = (_scale_group(group, lr_factor, wd_factor), lr_factor)
    return buckets[key][0]["params"]


def _bucket_key(s, kind: str) -> tuple[tuple, float, float]:
    """(bucket key, learning-rate factor, weight-decay factor) of a parameter with infshape `s` under `kind`."""
    ninf = s.ninf()
    if ninf == 2:
        mult = s.width_mult() if kind == "adam" else s.fanin_fanout_mult_ratio()
        return ("matrix", mult), 1.0 / mult, mult
    if kind == "adam":
        return ("vector",), 1.0, 1.0
    if ninf == 1:
        wm = s.width_mult()
        return ("vector", wm), wm, 1.0 / wm
    return ("fixed",), 1.0, 1.0


def mup_param_groups(param_groups: list[dict], kind: str) -> tuple[list[dict], list[int], list[float]]:
    """The muP split of `param_groups`, and for each new group the index of the group it came from and its learning
    rate relative to that group.

    Raises:
        ConfigurationError: a parameter has no `infshape` (base shapes were not set) or more than 2 width dims.
    """
    new_groups: list[dict] = []
    sources: list[int] = []
    factors: list[float] = []
    for index, group in enumerate(param_groups):
        buckets: dict[tuple, tuple[dict, float]] = {}
        for p in group["params"]:
            s = getattr(p, "infshape", None)
            if s is None:
                raise ConfigurationError(
                    f"a parameter of shape {tuple(p.shape)} has no base shape: did the MuP callback run before the "
                    "optimizer was created? (it sets base shapes in `configure_model`)"
                )
            ninf = s.ninf()
            if ninf > 2:
                raise ConfigurationError(f"muP handles at most 2 width dimensions; a parameter of shape "
                                         f"{tuple(p.shape)} has {ninf}")
            _bucket(buckets, group, *_bucket_key(s, kind)).append(p)
        for new_group, factor in buckets.values():
            new_groups.append(new_group)
            sources.append(index)
            factors.append(factor)
    return new_groups, sources, factors


def make_optimizer_mup(optimizer: torch.optim.Optimizer, kind: str | None = None, schedulers=()) -> list[int]:
    """Replace the optimizer's groups by their muP split, in place; remap the given schedulers' per-group lists.

    Returns:
        The source group index of each new group.
    """
    if optimizer.state:
        raise ConfigurationError("the optimizer has state already: muP must be applied before the first step")
    kind = optimizer_kind(optimizer, kind)
    new_groups, sources, factors = mup_param_groups(optimizer.param_groups, kind)
    optimizer.param_groups.clear()
    for group in new_groups:
        optimizer.add_param_group(group)
    for scheduler in schedulers:
        if getattr(scheduler, "optimizer", None) is optimizer:
            remap_scheduler(scheduler, sources, factors)
    return sources


def remap_scheduler(scheduler, sources: list[int], factors: list[float]) -> None:
    """Remap a scheduler's per-group lists to the new groups (see the module docstring)."""
    for attr in SCHEDULER_LR_LISTS:
        value = getattr(scheduler, attr, None)
        if isinstance(value, list):
            setattr(scheduler, attr, [value[i] * f for i, f in zip(sources, factors)])
    for attr in SCHEDULER_GROUP_LISTS:
        value = getattr(scheduler, attr, None)
        if isinstance(value, list):
            setattr(scheduler, attr, [value[i] for i in sources])
    for inner in getattr(scheduler, NESTED_SCHEDULERS, None) or ():
        remap_scheduler(inner, sources, factors)


def split_optimizers_and_schedulers(config) -> tuple[list, list]:
    """Optimizers and schedulers anywhere in what `configure_optimizers` may return."""
    optimizers, schedulers = [], []

    def walk(x):
        if isinstance(x, torch.optim.Optimizer):
            optimizers.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif hasattr(x, "optimizer") and hasattr(x, "step"):  # an LR scheduler
            schedulers.append(x)

    walk(config)
    return optimizers, schedulers
