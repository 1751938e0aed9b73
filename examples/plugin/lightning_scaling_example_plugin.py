"""An example third-party `lightning_scaling` plugin: a JSON-lines sink and a deep-narrow architecture proposal.

Installed (``pip install -e examples/plugin``), its ``pyproject.toml`` declares the entry point
``example = "lightning_scaling_example_plugin"`` in the group ``lightning_scaling``, so
`lightning_scaling.plugins.plugin_manager()` registers this module as the plugin ``"example"``, after the built-in
one: pluggy calls it first.

- `on_recommendation`: appends each recommendation as one JSON line to the file named by the environment variable
  ``LIGHTNING_SCALING_RECOMMENDATIONS_FILE``; does nothing when it is unset. One line per recommendation, written
  with a single append, so several runs can share the file.
- `propose_architecture`: for GPT-like hyperparameters (``d_model``, ``n_layer``, ``n_head``), a deep-narrow shape:
  heads 32 wide and d_model / n_layer = 32, whatever the finished run used; it overrides the built-in proposal,
  which keeps the run's own head width and aspect ratio. Anything else: None, so the next plugin answers.
"""

from __future__ import annotations

import json
import os

from lightning_scaling.plugins import DEFAULT_VOCAB_SIZE, GPT_KEYS, gpt_shape_for, hookimpl

#: The environment variable naming the JSON-lines file recommendations are appended to.
RECOMMENDATIONS_FILE_ENV = "LIGHTNING_SCALING_RECOMMENDATIONS_FILE"
D_HEAD = 32  # head width of the deep-narrow family
ASPECT = 32  # d_model / n_layer; Kaplan et al. 2020 (Fig. 5) find loss flat over roughly 20-200


def _jsonable(value):
    """numpy scalars and arrays (``.tolist()``); anything else by its ``str``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


@hookimpl
def on_recommendation(recommendation: dict) -> None:
    """Append `recommendation` as one JSON line to ``$LIGHTNING_SCALING_RECOMMENDATIONS_FILE``, if it is set."""
    path = os.environ.get(RECOMMENDATIONS_FILE_ENV)
    if not path:
        return
    line = json.dumps(recommendation, sort_keys=True, default=_jsonable)
    with open(path, "a", encoding="utf-8") as sink:
        sink.write(line + "\n")


@hookimpl
def propose_architecture(params: float, hparams: dict) -> dict | None:
    """A deep-narrow GPT (d_head 32, d_model / n_layer 32) of about `params` non-embedding parameters, or None."""
    if any(hparams.get(key) is None for key in GPT_KEYS):
        return None
    vocab_size = hparams.get("vocab_size")
    vocab_size = DEFAULT_VOCAB_SIZE if vocab_size is None else int(float(vocab_size))
    return gpt_shape_for(params, d_head=D_HEAD, aspect=ASPECT, vocab_size=vocab_size)
