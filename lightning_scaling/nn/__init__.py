"""Tensor code (torch, no Lightning): what the callbacks measure and change in a model.

- `layers`: which layers are which: linear maps (`nn.Linear`, Hugging Face `Conv1D`, attention projections),
  embeddings, and the readout found by identity.
- `measure`: data in a batch (tokens or samples), parameter counts, non-zero counts, FLOPs of the executed step.
- `masks`: magnitude pruning with bool masks, applied in place.
- `mup_shapes`, `mup_optim`, `coord_check`: muP on Microsoft's `mup` package: base shapes, muP optimizer groups in
  place, the attention scale, and the coordinate check.
"""

from lightning_scaling.nn.coord_check import CoordCheckResult, coord_check, coord_check_from_config
from lightning_scaling.nn.layers import embeddings, is_linear, linear_weights, readout_names
from lightning_scaling.nn.masks import apply_masks, magnitude_masks, prunable_parameters, sparsity_of
from lightning_scaling.nn.measure import StepFlops, count_nonzero, count_params, default_input, default_tokens
from lightning_scaling.nn.mup_optim import make_optimizer_mup, mup_param_groups, optimizer_kind
from lightning_scaling.nn.mup_shapes import (
    attach,
    attention_scale,
    base_shapes_from_hparams,
    convert_to_mureadout,
    find_readout,
    reattach,
)

__all__ = [
    "CoordCheckResult",
    "StepFlops",
    "apply_masks",
    "attach",
    "attention_scale",
    "base_shapes_from_hparams",
    "convert_to_mureadout",
    "coord_check",
    "coord_check_from_config",
    "count_nonzero",
    "count_params",
    "default_input",
    "default_tokens",
    "embeddings",
    "find_readout",
    "is_linear",
    "linear_weights",
    "magnitude_masks",
    "make_optimizer_mup",
    "mup_param_groups",
    "optimizer_kind",
    "prunable_parameters",
    "readout_names",
    "reattach",
    "sparsity_of",
]
