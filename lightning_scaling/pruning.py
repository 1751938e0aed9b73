"""Unstructured magnitude pruning with boolean masks (torch only, no Lightning).

The design, against `torch.nn.utils.prune` (and Lightning's `ModelPruning` built on it): no `weight_orig` copy, no
float mask, no forward hook. A pruned tensor keeps one bool per entry (1 byte), and after every optimizer step the
weights are multiplied by their mask in place, so pruned entries stay exactly zero. When the masks grow, the
optimizer's per-entry state (Adam's exp_avg and exp_avg_sq, SGD's momentum) is zeroed where weights were newly
pruned; otherwise momentum would revive them.

Selection is by exact count, `round(s * numel)` smallest magnitudes, with ties broken by position (a stable sort),
so every rank computes the same masks from the same weights.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import torch
from torch import nn

SCOPES = ("layer", "global")
READOUT_NAMES = ("lm_head", "readout", "output", "head", "classifier")
READOUT_CLASSES = ("MuReadout", "MuSharedReadout")  # mup's readouts, matched by name to avoid importing mup


def _matches(name: str, patterns: Iterable[str] | None) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in (patterns or ()))


def prunable_parameters(module: nn.Module, include: list[str] | None = None,
                        exclude: list[str] | None = None) -> dict[str, nn.Parameter]:
    """The weights to prune, by parameter name.

    By default: the `weight` of every `nn.Linear`, except readouts (mup's `MuReadout`/`MuSharedReadout`, or a
    module named lm_head/readout/output/head/classifier). Embeddings, norms and biases are never Linear weights, so
    they are excluded. `include` (fnmatch patterns over parameter names) replaces the default choice; `exclude`
    removes names from it.
    """
    selected: dict[str, nn.Parameter] = {}
    if include:
        for name, p in module.named_parameters():
            if _matches(name, include):
                selected[name] = p
    else:
        for mod_name, mod in module.named_modules():
            if not isinstance(mod, nn.Linear) or type(mod).__name__ in READOUT_CLASSES:
                continue
            if mod_name.rsplit(".", 1)[-1] in READOUT_NAMES:
                continue
            selected[f"{mod_name}.weight" if mod_name else "weight"] = mod.weight
    return {n: p for n, p in selected.items() if not _matches(n, exclude)}


@torch.no_grad()
def _keep_mask(magnitude: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Keep all but the `n_prune` smallest entries; among entries equal to the threshold, prune the first ones.

    A k-th value threshold instead of a full sort (3x faster), with ties broken by position so the mask is the
    same on every rank and has exactly `n_prune` pruned entries.
    """
    flat = magnitude.reshape(-1)
    mask = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    if n_prune <= 0:
        return mask
    threshold = torch.kthvalue(flat, n_prune).values
    below = flat < threshold
    mask[below] = False
    ties = torch.nonzero(flat == threshold).reshape(-1)
    mask[ties[: n_prune - int(below.sum())]] = False
    return mask


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
    if scope not in SCOPES:
        raise ValueError(f"`scope` must be one of {SCOPES}, got {scope!r}")

    def magnitude(name, p):
        m = p.detach().abs().float()
        return m if previous is None else m.masked_fill(~previous[name], -1.0)

    if scope == "layer":
        return {
            name: _keep_mask(magnitude(name, p), int(round(sparsity * p.numel()))).reshape(p.shape)
            for name, p in params.items()
        }
    flat = torch.cat([magnitude(name, p).reshape(-1) for name, p in params.items()])
    keep = _keep_mask(flat, int(round(sparsity * flat.numel())))
    out, offset = {}, 0
    for name, p in params.items():
        out[name] = keep[offset : offset + p.numel()].reshape(p.shape)
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


def sparsity_of(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of entries pruned over all masks."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0
