"""This family's size knob, as a plugin: the width alone.

The example GPT keeps two layers and a head size of 16 at every width (what muP transfers across, `config.yaml`),
so a planned size N becomes the width whose non-embedding count is nearest N in log. `WidthFamily` is the
`propose_architecture` plugin that says so; the sweep registers it (`sweep.plugins` in `sweep.yaml`), so that the
plan and the recommendation stay in the two-layer family (the built-in proposal changes the depth too).
"""

from __future__ import annotations

import math

from lightning_scaling.plugins import gpt_non_embedding_params, hookimpl

WIDTHS = range(16, 257, 16)  # d_model a multiple of the head size 16
N_LAYER = 2


def propose_width(params: float, hparams: dict | None = None) -> dict:
    """The two-layer shape with d_head = 16 whose non-embedding count is nearest `params` in log.

    >>> propose_width(3.4e4)["d_model"]
    32
    """
    d = min(WIDTHS, key=lambda d: abs(math.log(gpt_non_embedding_params(d, N_LAYER) / params)))
    return {"d_model": d, "n_layer": N_LAYER, "n_head": d // 16, "params": gpt_non_embedding_params(d, N_LAYER)}


class WidthFamily:
    """The `propose_architecture` plugin of this family: `propose_width`."""

    @hookimpl
    def propose_architecture(self, params, hparams):
        return propose_width(params, hparams)
