"""Unstructured magnitude pruning with boolean masks (torch only, no Lightning).

The design, against `torch.nn.utils.prune` (and Lightning's `ModelPruning` built on it): no `weight_orig` copy, no
float mask, no forward hook. A pruned tensor keeps one bool per entry (1 byte), and after every optimizer step the
weights are multiplied by their mask in place, so pruned entries stay exactly zero. When the masks grow, the
optimizer's per-entry state (Adam's exp_avg and exp_avg_sq, SGD's momentum) is zeroed where weights were newly
pruned; otherwise momentum would revive them.

What is pruned by default: every linear weight of `layers.linear_weights` (`nn.Linear`, Hugging Face `Conv1D`,
`nn.MultiheadAttention`'s input projections) except the readout (`layers.readout_names`) and any weight shared with
an embedding. `include` names other weights (any tensor of 2 or more dimensions).

Selection is by exact count, `round(s * numel)` smallest magnitudes, with ties broken by position, so every rank
computes the same masks from the same weights. It runs on the device with no host sync. A sharded weight (FSDP2's
DTensor) is gathered for the selection, which is then cut back to the local shard.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import get_args

import torch
from torch import nn

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.nn.layers import embedding_parameter_ids, linear_weights, module_kinds, readout_names
from lightning_scaling.nn.measure import local_tensor
from lightning_scaling.options import Choice, PruningScope

SCOPES = get_args(PruningScope)


def _matches(name: str, patterns: Iterable[str] | None) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in (patterns or ()))


def prunable_parameters(module: nn.Module, include: list[str] | None = None,
                        exclude: list[str] | None = None) -> dict[str, nn.Parameter]:
    """The weights to prune, by parameter name (see the module docstring).

    Args:
        module: the model.
        include: fnmatch patterns over parameter names replacing the default choice; every match must be a tensor
            of 2 or more dimensions.
        exclude: patterns removed from the choice.

    Raises:
        ConfigurationError: `include` matches a 1-d parameter (a bias or a norm), or nothing is left to prune (the
            message says what the module holds and what was excluded).
    """
    if include:
        selected = {n: p for n, p in module.named_parameters() if _matches(n, include)}
        flat = sorted(n for n, p in selected.items() if p.dim() < 2)
        if flat:
            raise ConfigurationError(f"`include` matches parameters with fewer than 2 dimensions {flat[:6]}: only "
                                     "weight matrices (or higher) can be pruned; narrow the patterns")
    else:
        readouts = set(readout_names(module))
        tied = embedding_parameter_ids(module)
        selected = {w.param_name: w.weight for w in linear_weights(module)
                    if w.module_name not in readouts and id(w.weight) not in tied}
    out = {n: p for n, p in selected.items() if not _matches(n, exclude)}
    if not out:
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(module_kinds(module).items()))
        raise ConfigurationError(
            f"found no weights to prune in {type(module).__name__}: by default the weights of nn.Linear, Hugging "
            f"Face Conv1D and nn.MultiheadAttention projections are pruned, except the readout "
            f"{sorted(readout_names(module))} and embedding-tied weights; `include`={include!r}, "
            f"`exclude`={exclude!r}. The module holds: {kinds or 'no parameters'}. Name the weights with `include`"
        )
    return out


@torch.no_grad()
def _keep_mask(magnitude: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Keep all but the `n_prune` smallest entries; among entries equal to the threshold, prune the first ones.

    A k-th value threshold instead of a full sort; ties are ranked by a cumulative sum, so the mask has
    exactly `n_prune` pruned entries and is the same on every rank, with no host sync.
    """
    flat = magnitude.reshape(-1)
    if n_prune <= 0:
        return torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    threshold = torch.kthvalue(flat, n_prune).values
    below = flat < threshold
    ties = flat == threshold
    tie_rank = torch.cumsum(ties, 0, dtype=torch.int64)  # 1 for the first tie, 2 for the second...
    prune_ties = ties & (tie_rank <= n_prune - below.sum(dtype=torch.int64))
    return ~(below | prune_ties)


def _full(t: torch.Tensor) -> torch.Tensor:
    full = getattr(t, "full_tensor", None)
    return full() if callable(full) else t


def _like(mask: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A full-size mask laid out as `param`: the same shard of a DTensor parameter, else itself."""
    mesh = getattr(param, "device_mesh", None)
    if mesh is None:
        return mask
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(mask, mesh, param.placements, src_data_rank=None)  # every rank holds the full mask


@torch.no_grad()
def magnitude_masks(params: dict[str, torch.Tensor], sparsity: float, scope: str = "layer",
                    previous: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Bool masks (True = keep) pruning the `sparsity` fraction of smallest-magnitude entries.

    Args:
        params: tensors by name.
        sparsity: fraction to prune, in [0, 1).
        scope: "layer" prunes that fraction of every tensor; "global" ranks all entries together.
        previous: masks so far; entries they pruned rank first, so a mask never revives a pruned weight.
    """
    Choice.of(PruningScope).check("scope", scope)

    def magnitude(name, p):
        m = _full(p.detach()).abs().float()
        return m if previous is None else m.masked_fill(~_full(previous[name]), -1.0)

    if scope == "layer":
        return {
            name: _like(_keep_mask(magnitude(name, p), int(round(sparsity * p.numel()))).reshape(p.shape), p)
            for name, p in params.items()
        }
    flat = torch.cat([magnitude(name, p).reshape(-1) for name, p in params.items()])
    keep = _keep_mask(flat, int(round(sparsity * flat.numel())))
    out, offset = {}, 0
    for name, p in params.items():
        out[name] = _like(keep[offset : offset + p.numel()].reshape(p.shape), p)
        offset += p.numel()
    return out


@torch.no_grad()
def apply_masks(params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    """weight *= mask, in place, for every masked tensor."""
    for name, p in params.items():
        p.mul_(masks[name])


@torch.no_grad()
def reset_optimizer_state(optimizers, param: torch.Tensor, newly_pruned: torch.Tensor) -> None:
    """Zero the per-entry optimizer state (exp_avg, exp_avg_sq, momentum...) of `param` where `newly_pruned`."""
    for optimizer in optimizers:
        state = optimizer.state.get(param)
        if not state:
            continue
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                value.masked_fill_(newly_pruned, 0)


def full_masks(masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The masks as full CPU tensors (sharded masks gathered), for a checkpoint."""
    return {n: _full(m).detach().cpu() for n, m in masks.items()}


def masks_like(masks: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full masks (from a checkpoint) placed on each parameter's device and layout."""
    return {n: _like(m.to(local_tensor(params[n]).device), params[n]) for n, m in masks.items()}


def sparsity_of(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of entries pruned over all masks (a host read: for reports and tests, not the training step)."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(_full(m).sum()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0
