"""The hooks a `lightning_scaling` plugin can implement (pluggy project name ``"lightning_scaling"``).

A plugin is any module or object with functions decorated ``@hookimpl`` whose names are those of the specs below.
Plugins come from three places, in this order: the built-in plugin (`lightning_scaling.plugins.builtin`, registered
as ``"builtin"``), installed distributions that declare an entry point in the group ``lightning_scaling``, and
objects registered by hand on `lightning_scaling.plugins.plugin_manager()`. pluggy calls the plugin registered last
first, so a third-party plugin overrides the built-in answer of a ``firstresult`` hook, and a plugin registered in a
test overrides both. A hook implementation may accept a subset of a spec's arguments, by name.

    from lightning_scaling.plugins.hookspecs import hookimpl

    @hookimpl
    def on_recommendation(recommendation):
        print(recommendation["sentence"])

Hooks:

- `propose_architecture` (first non-None answer wins): a concrete shape for a size N.
- `estimate_flops` (first non-None answer wins): training FLOPs of one batch, replacing the measured count.
- `register_law_forms` (every plugin): name the estimators that can fit a scaling law.
- `on_recommendation` (every plugin): a sink for the recommended next run.
- `register_executors` (every plugin): name the engines a sweep can hand its runs to.

This module imports only pluggy, so a plugin can be written and tested without torch or Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "lightning_scaling"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec(firstresult=True)
def propose_architecture(params: float, hparams: dict) -> dict | None:
    """Propose a concrete architecture with about `params` non-embedding parameters.

    Called when a recommendation says "train a model of N parameters next", to turn N into a shape the user's
    model class can build. The first plugin that returns a dict answers; the others are not called.

    Args:
        params: N as the scaling law counts it: the non-embedding parameter count, i.e. every parameter except
            ``nn.Embedding`` tables (token and position embeddings). An untied readout (``lm_head``) is counted.
        hparams: the hyperparameters of the run just finished, e.g. ``{"d_model": 64, "n_layer": 2, "n_head": 4,
            "vocab_size": 256, "seq_len": 128, "lr": 1e-3}``. Values read back from a run store may be strings.
            Treat it as read-only.

    Returns:
        A dict of the hyperparameters to change, plus ``"params"``: the exact non-embedding count of the proposed
        shape (which differs a little from the requested `params`, as shapes are discrete), e.g.
        ``{"d_model": 192, "n_layer": 7, "n_head": 12, "params": 3163584}``. Return None when the plugin does not
        know this kind of model, to let the next plugin answer.
    """


@hookspec(firstresult=True)
def estimate_flops(module: Any, batch: Any) -> int | None:
    """Training FLOPs (forward + backward) of one batch of `module`, replacing the measured count.

    The default is a measurement with ``torch.utils.flop_counter.FlopCounterMode``; a plugin answers for models the
    counter gets wrong (custom kernels, sparse or mixture-of-experts layers) or to use an analytic formula. The first
    plugin that returns a number answers; the others are not called.

    Args:
        module: the model being trained (a ``torch.nn.Module``, usually a ``LightningModule``).
        batch: one training batch, as the dataloader yields it.

    Returns:
        FLOPs as an integer >= 0, or None to let the next plugin, and in the end the default measurement, answer.
    """


@hookspec
def register_law_forms(register: Callable[[str, Callable[[], Any]], None]) -> None:
    """Name the scaling-law estimators this plugin provides. Every plugin is called.

    Args:
        register: call ``register(name, factory)`` once per law form. `name` is the key users select the form by
            (``"chinchilla"`` is the built-in L(N, D) = E + A / N^alpha + B / D^beta). `factory()` takes no
            arguments and returns a new scikit-learn style estimator like `lightning_scaling.law.fit.ChinchillaFit`:
            ``fit(N, D, loss) -> self``, ``predict(N, D)``, and the fitted law as ``law_``. A class with default
            arguments is a factory. Two plugins registering the same name is an error naming both.

    Returns:
        Nothing; the return value is ignored.
    """


@hookspec
def on_recommendation(recommendation: dict) -> None:
    """Receive the recommended next run. Every plugin is called: this is where sinks go (a file, a chat message,
    a job queue).

    Args:
        recommendation: the dict of `lightning_scaling.planner.advise(...).to_dict()`: the fitted law (``E``,
            ``A``, ``B``, ``alpha``, ``beta``, ...), the compute-optimal ``params``, ``tokens``, ``flops`` and
            ``loss``, and a one-line ``sentence``. Each plugin gets its own shallow copy.

    Returns:
        Nothing; the return value is ignored. An exception is turned into a warning naming the plugin, so one broken
        sink neither stops the others nor the training run.
    """


@hookspec
def register_executors(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Name the execution engines this plugin provides to `lightning-scaling sweep --executor NAME`. Every plugin is
    called.

    Args:
        register: call ``register(name, factory)`` once per engine. ``factory(resources=..., folder=..., **options)``
            returns a `lightning_scaling.executors.Executor`: `resources` is what each run needs
            (`lightning_scaling.executors.Resources`), `folder` a directory for the engine's own files, and
            `options` the keys of the sweep YAML's section of that name. The built-in names (``local``, ``slurm``,
            ``ray``) cannot be taken; two plugins registering one name is an error naming both.

    Returns:
        Nothing; the return value is ignored.
    """
