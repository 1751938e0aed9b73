"""Both Lightning namespaces from one implementation: `lightning.pytorch` and `pytorch_lightning`.

Lightning ships the same trainer under two import names, as separate class trees: `lightning.pytorch` (what
Lightning's documentation installs, ``pip install lightning``) and the standalone `pytorch_lightning`. A trainer of
one namespace runs a callback of the other by duck typing, but LightningCLI's ``class_path`` checks, ``isinstance``
checks and type hints do not. So the callbacks of this package derive from the `Callback` of every namespace that is
installed: the same class is a `lightning.pytorch.Callback` and a `pytorch_lightning.Callback`, and one YAML
``class_path: lightning_scaling.callbacks.PowerLR`` works under either CLI.

`namespace_of(obj)` tells which namespace a module, trainer or class comes from; `lightning_module(name)` and
`cli_module(name)` import a namespace's pieces by name.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Literal, get_args

from typing_extensions import override

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.options import Choice

if TYPE_CHECKING:  # the hooks' types, for readers and type checkers (either namespace works at run time)
    from lightning.pytorch import LightningModule, Trainer  # noqa: F401  (the callbacks import them from here)
    from torch.optim import Optimizer  # noqa: F401  (the callbacks import it from here)

#: The namespaces this package knows, in order of preference.
Namespace = Literal["lightning.pytorch", "pytorch_lightning"]
NAMESPACES = get_args(Namespace)


def installed_namespaces() -> tuple[str, ...]:
    """The Lightning namespaces that import here, in order of preference."""
    found = []
    for name in NAMESPACES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        found.append(name)
    return tuple(found)


INSTALLED = installed_namespaces()
if not INSTALLED:  # pragma: no cover - the package depends on `lightning`
    raise ImportError(
        "lightning_scaling.callbacks needs PyTorch Lightning: `pip install lightning` "
        "(or `pip install pytorch-lightning`)"
    )



class _OverridesChecked:
    """Refuses, when the class is defined, a method marked `@override` that no base class has: a misspelt hook
    (`on_train_batch_strat`) fails loudly instead of never being called."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, attr in vars(cls).items():
            fn = attr.fget if isinstance(attr, property) else attr
            if getattr(fn, "__override__", False) and not any(name in vars(base) for base in cls.__mro__[1:]):
                raise TypeError(f"{cls.__name__}.{name} is marked @override, but no base class has `{name}`: "
                                "a misspelt hook name?")


_BASES = tuple(importlib.import_module(name).Callback for name in INSTALLED)
#: The base class of this package's callbacks: the `Callback` of every installed namespace.
Callback = type("Callback", (_OverridesChecked, *_BASES), {"__module__": __name__})

__all__ = [
    "INSTALLED",
    "NAMESPACES",
    "REFUSED_STRATEGIES",
    "SUPPORTED_STRATEGIES",
    "Callback",
    "Namespace",
    "check_strategy",
    "cli_module",
    "installed_namespaces",
    "lightning_module",
    "namespace_of",
    "override",
    "running_trainer",
    "strategy_name",
    "warn_rank_zero",
]


def namespace_of(obj) -> str | None:
    """"lightning.pytorch" or "pytorch_lightning" for a Lightning object or class of that namespace, else None."""
    cls = obj if isinstance(obj, type) else type(obj)
    for klass in cls.__mro__:
        module = klass.__module__ or ""
        for name in NAMESPACES:
            if module == name or module.startswith(name + "."):
                return name
    return None


def lightning_module(namespace: str | None = None):
    """The top module of a namespace (default: the preferred installed one)."""
    return importlib.import_module(Choice.of(Namespace).check("namespace", namespace or INSTALLED[0]))


def cli_module(namespace: str | None = None):
    """The `cli` module (LightningCLI, SaveConfigCallback) of a namespace."""
    return importlib.import_module(f"{lightning_module(namespace).__name__}.cli")


def running_trainer(ref):
    """The trainer behind a weak reference while its fit runs, else None: state saved outside a fit (a checkpoint
    written after training) must not start a collective that the other ranks will not join."""
    trainer = ref() if ref is not None else None
    status = getattr(getattr(trainer, "state", None), "status", None)
    return trainer if trainer is not None and getattr(status, "value", status) == "running" else None


def warn_rank_zero(trainer, message: str, category: type[Warning] = UserWarning) -> None:
    """A warning from global rank zero only (every rank runs the callbacks; one copy of a warning is enough)."""
    if trainer is None or getattr(trainer, "is_global_zero", True):
        warnings.warn(message, category, stacklevel=3)


# -- strategies -------------------------------------------------------------------------------------------------
#: Strategies the callbacks are tested with (matched by class name in the strategy's MRO, in either namespace).
SUPPORTED_STRATEGIES = ("SingleDeviceStrategy", "DDPStrategy", "ModelParallelStrategy")
#: Strategies refused by callbacks that read or change parameters, and why.
REFUSED_STRATEGIES = {
    "FSDPStrategy": "FSDP1 flattens and shards the parameters outside the forward pass, so parameter counts and "
    "masks would see shards; use ModelParallelStrategy (FSDP2: `fully_shard` in `configure_model`), which this "
    "package supports and tests, or DDPStrategy",
    "DeepSpeedStrategy": "DeepSpeed partitions parameters and optimizer state in its own engine; use "
    "ModelParallelStrategy (FSDP2) or DDPStrategy",
}


def strategy_name(trainer) -> str:
    return type(trainer.strategy).__name__


def check_strategy(trainer, owner: str, reads_parameters: bool = True) -> None:
    """Refuse a strategy the callback cannot support (the message names it and what to use), warn on unknown ones.

    Raises:
        ConfigurationError: the trainer's strategy is one of `REFUSED_STRATEGIES` and `reads_parameters`.
    """
    names = [klass.__name__ for klass in type(trainer.strategy).__mro__]
    if any(name in SUPPORTED_STRATEGIES for name in names):
        return
    refused = next((name for name in names if name in REFUSED_STRATEGIES), None)
    if refused is not None and reads_parameters:
        raise ConfigurationError(
            f"{owner} does not support the strategy {type(trainer.strategy).__name__}: {REFUSED_STRATEGIES[refused]}"
        )
    if refused is None:
        warn_rank_zero(trainer, f"{owner} has not been tested with the strategy {type(trainer.strategy).__name__}; "
                                f"tested: {', '.join(SUPPORTED_STRATEGIES)}")
