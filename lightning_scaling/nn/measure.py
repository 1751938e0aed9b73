"""Measuring a torch module and its batches: data counted, parameter counts, non-zero counts and training FLOPs.

These are the tensor-level pieces of the callbacks (torch only, no Lightning).

Data. A batch of token ids (an integer tensor, `batch["input_ids"]`, or the first element of a tuple) counts its
tokens; with an ``attention_mask`` in a dict batch, only the non-pad tokens (the mask's sum, left on the device: no
host sync). A batch of floating-point inputs (images, features, regression data) counts its samples, the leading
dimension: for such models D in C = 6 N D is the number of samples, and so is the unit of the recommendation.

Parameters. Counts use each tensor's global size, so a sharded parameter (FSDP2's DTensor) counts in full; shared
(tied) parameters count once. Non-zero counts are taken on the local shard, on the device.

FLOPs. `StepFlops` counts the FLOPs of the real training step (the module's own forward with the batch exactly as
its `training_step` uses it, the loss and the backward pass) with `torch.utils.flop_counter.FlopCounterMode`, once
per batch shape. Measuring the executed step, not a copy, works for any forward signature, for plain tensor
attributes and for data-dependent Python (`.item()`) inside the forward, and it leaves the numbers computed bitwise
unchanged. After `max_shapes` distinct shapes, further shapes are estimated from the measured ones by least squares
on a B T + b B T^2 (linear layers and attention), so a run with many sequence lengths measures only a few steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import get_args

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from lightning_scaling.nn.layers import embedding_parameter_ids
from lightning_scaling.options import Choice, ParamsBasis

PARAMS_BASES = get_args(ParamsBasis)
DATA_UNITS = ("tokens", "samples")
MASK_KEY = "attention_mask"


# -- data -------------------------------------------------------------------------------------------------------
def default_input(batch):
    """The model input of a batch: `batch["input_ids"]`, the first element of a tuple/list, or the tensor itself."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        for key in ("input_ids", "inputs", "x"):
            if key in batch and isinstance(batch[key], torch.Tensor):
                return batch[key]
        raise TypeError(f"cannot find the input in a batch with keys {sorted(batch)}: pass `tokens_fn`/`input_fn`")
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(f"cannot find the input in a batch of type {type(batch).__name__}: pass `tokens_fn`/`input_fn`")


def attention_mask(batch) -> torch.Tensor | None:
    """The batch's ``attention_mask`` (1 for real tokens, 0 for padding) when it is a dict that has one."""
    if isinstance(batch, Mapping) and isinstance(batch.get(MASK_KEY), torch.Tensor):
        return batch[MASK_KEY]
    return None


def data_unit(batch) -> str:
    """"tokens" for token ids (integer inputs), "samples" for floating-point inputs."""
    x = default_input(batch)
    return "samples" if (x.is_floating_point() or x.is_complex()) else "tokens"


def default_tokens(batch):
    """D contributed by a batch: non-pad tokens, all tokens, or samples (see the module docstring).

    Returns an int read from shapes, or a 0-d integer tensor on the batch's device when an attention mask has to be
    summed (no host sync).
    """
    mask = attention_mask(batch)
    if mask is not None:
        return mask.sum(dtype=torch.int64)
    x = default_input(batch)
    if x.is_floating_point() or x.is_complex():
        return int(x.shape[0]) if x.dim() else 1
    return int(x.numel())


def default_sequences(batch) -> int:
    """Sequences (or samples) in a batch: the leading dimension of its input."""
    x = default_input(batch)
    return int(x.shape[0]) if x.dim() > 0 else 1


# -- parameters -------------------------------------------------------------------------------------------------
def count_params(module: nn.Module) -> dict[str, int]:
    """Total, embedding and non-embedding parameter counts (shared parameters once, sharded ones in full)."""
    emb = embedding_parameter_ids(module)
    total = embedding = 0
    for p in module.parameters():  # `parameters()` yields a shared parameter once
        total += p.numel()  # a DTensor's numel is its global size
        if id(p) in emb:
            embedding += p.numel()
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def basis_parameters(module: nn.Module, basis: str = "non_embedding") -> list[torch.Tensor]:
    """The parameters N counts: all, or all but the embedding tables (Kaplan et al. 2020, Sec. 2.1)."""
    Choice.of(ParamsBasis).check("params_basis", basis)
    emb = embedding_parameter_ids(module) if basis == "non_embedding" else set()
    return [p for p in module.parameters() if id(p) not in emb]


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The part of a tensor this process holds: the local shard of a DTensor, else the tensor itself."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def is_sharded(params) -> bool:
    """Whether any of the tensors is a DTensor (FSDP2 / ModelParallelStrategy)."""
    return any(callable(getattr(p, "to_local", None)) for p in params)


@torch.no_grad()
def count_nonzero(params: list[torch.Tensor]) -> torch.Tensor:
    """Non-zero entries over `params` (local shards), as a 0-d int64 tensor on their device (no host sync)."""
    if not params:
        return torch.zeros((), dtype=torch.int64)
    # (p != 0).sum() is faster than torch.count_nonzero on CPU for these sizes, with the same result
    return torch.stack([(local_tensor(p).detach() != 0).sum() for p in params]).sum()


# -- FLOPs ------------------------------------------------------------------------------------------------------
def batch_shape_key(batch) -> tuple:
    """Shapes and dtypes of every tensor in a (nested) batch: batches with equal keys cost the same FLOPs."""
    out = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            out.append((tuple(x.shape), str(x.dtype)))
        elif isinstance(x, Mapping):
            for k in sorted(x, key=str):
                out.append(str(k))
                walk(x[k])
        elif isinstance(x, (tuple, list)):
            for v in x:
                walk(v)

    walk(batch)
    return tuple(out)


def _batch_dims(batch) -> tuple[int, int]:
    """(B, T) of the batch's input: leading dimension and, for 2-d or larger inputs, the second one."""
    x = default_input(batch)
    B = int(x.shape[0]) if x.dim() else 1
    T = int(x.shape[1]) if x.dim() > 1 else 1
    return B, T


def _cpu_attention_formulas() -> dict:
    """FLOP formulas for the CPU's fused attention kernels, which `flop_registry` lacks (scaled_dot_product_attention
    on CPU runs `_scaled_dot_product_flash_attention_for_cpu`): the same formulas as the CUDA flash kernels, whose
    arguments come in the same order."""
    aten = torch.ops.aten
    pairs = (("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention"),
             ("_scaled_dot_product_flash_attention_for_cpu_backward", "_scaled_dot_product_flash_attention_backward"))
    out = {}
    for cpu, cuda in pairs:
        if hasattr(aten, cpu) and getattr(aten, cuda, None) in flop_registry:
            out[getattr(aten, cpu)] = flop_registry[getattr(aten, cuda)]
    return out


class StepFlops:
    """Training FLOPs per batch shape, measured on the executed training step (see the module docstring).

    Usage per micro-batch: `lookup(batch)`; when it returns None, `start()` before the step and `stop(batch)` after
    its backward pass (`abort()` when the step ended without one).

    Args:
        max_shapes: distinct batch shapes measured; beyond them FLOPs are estimated from the measured shapes.
    """

    def __init__(self, max_shapes: int = 16):
        self.max_shapes = max_shapes
        self.measured: dict[tuple, int] = {}
        self._dims: dict[tuple, tuple[int, int]] = {}
        self._counter: FlopCounterMode | None = None
        self._coef: np.ndarray | None = None

    @property
    def counting(self) -> bool:
        return self._counter is not None

    def lookup(self, batch) -> int | None:
        """FLOPs of a batch of this shape if measured or estimable, else None (then measure it)."""
        key = batch_shape_key(batch)
        if key in self.measured:
            return self.measured[key]
        if len(self.measured) < self.max_shapes:
            return None
        return self.estimate(batch)

    def estimate(self, batch) -> int:
        """FLOPs of a batch from the measured shapes: least squares on FLOPs = a B T + b B T^2."""
        if self._coef is None:
            X = np.array([[B * T, B * T * T] for B, T in self._dims.values()], float)
            y = np.array([self.measured[k] for k in self._dims], float)
            self._coef = np.linalg.lstsq(X, y, rcond=None)[0]
        B, T = _batch_dims(batch)
        return max(0, int(round(self._coef[0] * B * T + self._coef[1] * B * T * T)))

    def start(self) -> None:
        counter = FlopCounterMode(display=False)
        counter.flop_registry.update(_cpu_attention_formulas())
        counter.__enter__()
        self._counter = counter

    def stop(self, batch) -> int:
        counter, self._counter = self._counter, None
        counter.__exit__(None, None, None)
        return self.record(batch, int(counter.get_total_flops()))

    def record(self, batch, flops: int) -> int:
        """Remember the FLOPs of a batch of this shape (measured, or given by a plugin)."""
        key = batch_shape_key(batch)
        self.measured[key] = flops
        self._dims[key] = _batch_dims(batch)
        self._coef = None
        return flops

    def abort(self) -> None:
        """Leave a measurement that saw no backward pass (the step was skipped); nothing is recorded."""
        counter, self._counter = self._counter, None
        if counter is not None:
            counter.__exit__(None, None, None)
