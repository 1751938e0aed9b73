"""The plugin manager and the calls the rest of the package makes through it.

`plugin_manager()` builds one process-wide ``pluggy.PluginManager("lightning_scaling")`` on first use, the way pytest
does: add the specs of `lightning_scaling.hookspecs`, register the built-in plugin (`builtin_plugins`, as
``"builtin"``), load every installed plugin of the entry point group ``lightning_scaling`` (a third-party
distribution declares ``[project.entry-points.lightning_scaling] name = "module"``), then `check_plugins()`, which
turns a misspelt hook name into a `ConfigurationError` naming the plugin and the hook. Setting the environment
variable ``LIGHTNING_SCALING_DISABLE_PLUGIN_AUTOLOAD`` to a non-empty value skips the entry points (as
``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` does for pytest).

The helpers below are what callbacks and the closing hook call:

- `propose_architecture(params, hparams)` and `estimate_flops(module, batch)`: first non-None answer wins, and the
  plugin registered last is asked first, so an installed plugin overrides the built-in one.
- `law_forms()`: every plugin registers named estimator factories; two plugins claiming one name is an error that
  names both, so the clash is found when the forms are listed rather than by whichever happened to win.
- `notify_recommendation(recommendation)`: every plugin's `on_recommendation`, each in its own ``try``; an exception
  becomes a `PluginWarning` naming the plugin, so one broken sink neither silences the others nor crashes training.

Every hook is called through pluggy (``pm.hook.<name>(...)``). pluggy calls all implementations of a hook in one
chain, where the first exception stops the rest and every implementation gets the same arguments; the last two helpers
need to know which plugin did what and to give each its own arguments, so they call the hook through pluggy once per
implementing plugin (``pm.subset_hook_caller``, the others left out), in pluggy's order (last registered first).

This module imports only pluggy, the standard library and the numpy-only core, so it works without torch, Lightning
or MLflow.
"""

from __future__ import annotations

import difflib
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from numbers import Real
from typing import Any

import pluggy

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.options import Positive
from lightning_scaling.plugins import hookspecs
from lightning_scaling.plugins.hookspecs import PROJECT_NAME

#: The entry point group third-party plugins declare.
ENTRY_POINT_GROUP = PROJECT_NAME
#: Non-empty: do not load the plugins of the entry point group (the built-in plugin still is).
DISABLE_AUTOLOAD_ENV = "LIGHTNING_SCALING_DISABLE_PLUGIN_AUTOLOAD"
#: The name the built-in plugin is registered under.
BUILTIN_NAME = "builtin"

_manager: pluggy.PluginManager | None = None
_manager_lock = threading.Lock()


class PluginWarning(UserWarning):
    """A plugin failed in a hook whose failure must not stop the run (`on_recommendation`)."""


def _plugin_label(pm: pluggy.PluginManager, plugin: object) -> str:
    name = pm.get_name(plugin)
    if name is None:  # not (or no longer) registered: name it by what it is
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
    return repr(name)


def _validation_error(pm: pluggy.PluginManager, exc: pluggy.PluginValidationError) -> ConfigurationError:
    """pluggy's error (which hook, which arguments) prefixed with the plugin it is about."""
    detail = " ".join(str(exc).split())  # pluggy's message spans lines
    return ConfigurationError(f"plugin {_plugin_label(pm, exc.plugin)} is not a valid {PROJECT_NAME} plugin: {detail}")


def _known_hooks(pm: pluggy.PluginManager) -> list[str]:
    return sorted(name for name, hook in vars(pm.hook).items() if not name.startswith("_") and hook.has_spec())


def check_plugins(pm: pluggy.PluginManager | None = None) -> None:
    """pluggy's ``check_pending()``: every ``@hookimpl`` must name a hook of `hookspecs` (catches misspellings).

    Args:
        pm: the manager to check (default: `plugin_manager()`).

    Raises:
        ConfigurationError: a plugin implements a hook that does not exist; the message names the plugin, the
            unknown hook and the closest known hook names.
    """
    pm = plugin_manager() if pm is None else pm
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        problems = []
        for name, hook in sorted(vars(pm.hook).items()):
            if name.startswith("_") or hook.has_spec():
                continue
            for impl in hook.get_hookimpls():
                if impl.optionalhook:
                    continue
                close = difflib.get_close_matches(name, _known_hooks(pm), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"plugin {impl.plugin_name!r} implements unknown hook {name!r}{hint}")
        message = "; ".join(problems) or str(exc)
        raise ConfigurationError(f"{message}. Known hooks: {', '.join(_known_hooks(pm))}") from None


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created on first use (built-in plugin, entry points, checked).

    Raises:
        ConfigurationError: an installed plugin implements an unknown hook or a hook with arguments its spec does
            not have. The manager is not kept, so the next call tries again.
    """
    global _manager
    with _manager_lock:
        if _manager is None:
            from lightning_scaling.plugins import builtin as builtin_plugins

            pm = pluggy.PluginManager(PROJECT_NAME)
            pm.add_hookspecs(hookspecs)
            pm.register(builtin_plugins, name=BUILTIN_NAME)
            if not os.environ.get(DISABLE_AUTOLOAD_ENV):
                try:
                    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
                except pluggy.PluginValidationError as exc:
                    raise _validation_error(pm, exc) from exc
            check_plugins(pm)
            _manager = pm
        return _manager


def reset_plugin_manager() -> None:
    """Forget the process-wide manager; the next `plugin_manager()` builds a new one (for tests)."""
    global _manager
    with _manager_lock:
        _manager = None


def _implementing_plugins(pm: pluggy.PluginManager, hook_name: str) -> list[object]:
    """The plugins with a plain (not wrapper) implementation of a hook, in pluggy's call order."""
    impls = reversed(getattr(pm.hook, hook_name).get_hookimpls())
    return [impl.plugin for impl in impls if not (impl.hookwrapper or impl.wrapper)]


def _implementations(hook_name: str) -> list[str]:
    """The names of the plugins implementing a hook, in pluggy's call order (for error messages)."""
    pm = plugin_manager()
    return [pm.get_name(plugin) for plugin in _implementing_plugins(pm, hook_name)]


def _each_plugin(hook_name: str) -> Iterator[tuple[str, Callable[..., list]]]:
    """(plugin name, the hook called through pluggy with that plugin alone) for each plugin implementing a hook."""
    pm = plugin_manager()
    for plugin in _implementing_plugins(pm, hook_name):
        others = [other for other in pm.get_plugins() if other is not plugin]
        yield pm.get_name(plugin), pm.subset_hook_caller(hook_name, remove_plugins=others)


# -- the calls ----------------------------------------------------------------------------------------------------
def propose_architecture(params: float, hparams: Mapping[str, Any]) -> dict | None:
    """A concrete architecture with about `params` non-embedding parameters, from the first plugin that knows it.

    Args:
        params: N, the non-embedding parameter count (every parameter except embedding tables; the readout counts).
        hparams: the hyperparameters of the run just finished (e.g. d_model, n_layer, n_head, vocab_size).

    Returns:
        The proposing plugin's dict (the hyperparameters to change and ``"params"``, the proposal's exact count),
        or None when no plugin knows this kind of model.

    Raises:
        ConfigurationError: `params` is not a finite number > 0, `hparams` is not a mapping, or the answer is not a
            dict.

    >>> propose_architecture(1e6, {"lr": 1e-3}) is None  # not a GPT: the built-in plugin does not answer
    True
    """
    Positive(text="a finite number > 0").check("params", params)
    if not isinstance(hparams, Mapping):
        raise ConfigurationError(f"`hparams` must be a mapping of hyperparameters, got {type(hparams).__name__}")
    answer = plugin_manager().hook.propose_architecture(params=params, hparams=dict(hparams))
    if answer is not None and not isinstance(answer, Mapping):
        raise ConfigurationError(
            f"a `propose_architecture` hook must return a dict or None, got {type(answer).__name__}; implementations: "
            f"{_implementations('propose_architecture')}"
        )
    return None if answer is None else dict(answer)


def estimate_flops(module: Any, batch: Any) -> int | None:
    """Training FLOPs of one batch from the first plugin that answers, or None: then measure as usual.

    Raises:
        ConfigurationError: the answer is not a finite number >= 0.
    """
    answer = plugin_manager().hook.estimate_flops(module=module, batch=batch)
    if answer is None:
        return None
    if isinstance(answer, bool) or not isinstance(answer, Real) or not (answer >= 0 and math.isfinite(answer)):
        raise ConfigurationError(
            f"an `estimate_flops` hook must return a finite number >= 0 or None, got {answer!r}; implementations: "
            f"{_implementations('estimate_flops')}"
        )
    return int(round(answer))


def law_forms() -> dict[str, Callable[[], Any]]:
    """Every registered law form: name -> factory of a new estimator (``fit(N, D, loss)``, ``predict``, ``law_``).

    Raises:
        ConfigurationError: a name that is not a non-empty string, a factory that is not callable, or one name
            registered twice (the message names both plugins).

    >>> "chinchilla" in law_forms()
    True
    """
    return _registered("register_law_forms", "law form")


def executor_factories() -> dict[str, Callable[..., Any]]:
    """Every execution engine registered by a plugin (`register_executors`): name -> factory of an executor.

    Raises:
        ConfigurationError: as `law_forms`.
    """
    return _registered("register_executors", "executor")


def _registered(hook_name: str, what: str) -> dict[str, Callable[..., Any]]:
    """name -> factory from every plugin's ``register(name, factory)`` calls in the hook `hook_name`."""
    factories: dict[str, Callable[..., Any]] = {}
    owners: dict[str, str] = {}
    for plugin_name, hook in _each_plugin(hook_name):

        def register(name: str, factory: Callable[..., Any], _plugin: str = plugin_name) -> None:
            if not isinstance(name, str) or not name:
                raise ConfigurationError(
                    f"plugin {_plugin!r}: a {what}'s `name` must be a non-empty string, got {name!r}"
                )
            if not callable(factory):
                raise ConfigurationError(
                    f"plugin {_plugin!r}: the `factory` of {what} {name!r} must be callable, got {factory!r}"
                )
            if name in factories:
                raise ConfigurationError(
                    f"{what} {name!r} is registered twice: by plugin {owners[name]!r} and by plugin {_plugin!r}; "
                    f"uninstall one of them or rename the {what}"
                )
            factories[name], owners[name] = factory, _plugin

        hook(register=register)
    return factories


def notify_recommendation(recommendation: Mapping[str, Any]) -> None:
    """Give `recommendation` to every plugin's `on_recommendation` (each gets a shallow copy).

    A plugin that raises is reported with a `PluginWarning` naming it, and the remaining plugins are still called.
    """
    for plugin_name, hook in _each_plugin("on_recommendation"):
        try:
            hook(recommendation=dict(recommendation))
        except Exception as exc:  # a broken sink must not stop the others or the run
            warnings.warn(
                f"plugin {plugin_name!r} failed in `on_recommendation` and was skipped: {type(exc).__name__}: {exc}",
                PluginWarning,
                stacklevel=2,
            )
