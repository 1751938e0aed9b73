"""The engines by name: the built-in `local`, `slurm` and `ray`, and those plugins register (`register_executors`).

`make_executor(name, resources, folder, options)` builds one; the optional engines import their library only here,
and a missing one is a `ConfigurationError` with the line that installs it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_scaling import plugins
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.executors.base import Executor, Resources

__all__ = ["BUILTIN_EXECUTORS", "executor_names", "make_executor"]

#: name -> (module of its class, the class, the package it needs, the extra that installs it)
BUILTIN_EXECUTORS: dict[str, tuple[str, str, str | None, str | None]] = {
    "local": ("lightning_scaling.executors.local", "LocalExecutor", None, None),
    "slurm": ("lightning_scaling.executors.slurm", "SlurmExecutor", "submitit", "slurm"),
    "ray": ("lightning_scaling.executors.ray", "RayExecutor", "ray", "ray"),
}


def _plugin_executors() -> dict[str, Callable[..., Any]]:
    found = plugins.executor_factories()
    taken = sorted(set(found) & set(BUILTIN_EXECUTORS))
    if taken:
        raise ConfigurationError(f"a plugin registers the executor name(s) {taken}, which are built in; rename them")
    return found


def executor_names() -> list[str]:
    """Every executor `--executor` accepts: the built-in ones, then the plugins'."""
    return [*BUILTIN_EXECUTORS, *sorted(_plugin_executors())]


def make_executor(name: str, resources: Resources, folder: Path, options: dict | None = None) -> Executor:
    """The executor `name` for runs of `resources`, keeping its own files under `folder`, with the YAML `options`
    of its section.

    Raises:
        ConfigurationError: an unknown name (the message lists the known ones), an engine whose library is not
            installed (the message gives the ``pip install`` line), or an option the engine does not take.
    """
    options = dict(options or {})
    if name in BUILTIN_EXECUTORS:
        module, cls, needs, extra = BUILTIN_EXECUTORS[name]
        if needs is not None and importlib.util.find_spec(needs) is None:
            raise ConfigurationError(f"--executor {name} needs the `{needs}` package, which is not installed: "
                                     f"pip install 'lightning-scaling[{extra}]'")
        factory = getattr(importlib.import_module(module), cls)
    else:
        found = _plugin_executors()
        if name not in found:
            raise ConfigurationError(f"--executor must be one of {executor_names()}, got {name!r}")
        factory = found[name]
    try:
        executor = factory(resources=resources, folder=Path(folder), **options)
    except TypeError as err:
        raise ConfigurationError(f"sweep.{name}: {err} (see the `{name}` executor's settings)") from None
    if not isinstance(executor, Executor):
        raise ConfigurationError(f"the factory of executor {name!r} returned {type(executor).__name__}, not an "
                                 "`Executor`")
    return executor
