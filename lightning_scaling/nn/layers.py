"""Which layers of a model are which: its linear maps, its embeddings and its readout, found by identity.

Torch only; nothing here is named after a particular model. The layer kinds a scaling-law practice meets:

- Linear maps: `nn.Linear` and its subclasses (`nn.MultiheadAttention.out_proj`, mup's readouts), Hugging Face's
  `Conv1D` (GPT-2's projections: a weight stored (in, out), the transpose of `nn.Linear`; recognised by its class
  name and its `nf` attribute so that transformers need not be imported), and the input projections that
  `nn.MultiheadAttention` holds as its own parameters (`in_proj_weight`, or `q/k/v_proj_weight`).
- Embeddings: `nn.Embedding` tables.
- The readout (the output layer), found by what it is, not by its name; the first rule that finds one decides:

  1. a mup `MuReadout` / `MuSharedReadout`;
  2. a linear map whose weight *is* an embedding's weight (tied, as in GPT-2's `lm_head`);
  3. a linear map onto a vocabulary: output size equal to an embedding's number of rows and input size to its width
     (Llama's untied `lm_head`, the `decoder` of Lightning's demo Transformer); the last one registered, since an
     MLP's first layer can have the same shape (d_model 64 and a 256-byte vocabulary: 4 d_model = V);
  4. when none of these exists (an MLP, a CNN, a classifier head): the last linear map the module registers, which
     for `nn.Sequential` and for modules that define their layers in the order they run is the one that feeds the
     output. A model that registers its layers in another order names the readout explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MUP_READOUTS = ("MuReadout", "MuSharedReadout")  # matched by class name, so mup need not be imported
MHA_INPUT_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def is_conv1d(module: nn.Module) -> bool:
    """Hugging Face's `transformers.pytorch_utils.Conv1D`: a linear map with its weight stored (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def is_linear(module: nn.Module) -> bool:
    """`nn.Linear` (any subclass) or Hugging Face's `Conv1D`."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def linear_features(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a linear map."""
    if is_conv1d(module):
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    return int(module.in_features), int(module.out_features)


@dataclass(frozen=True)
class LinearWeight:
    """One weight matrix of a linear map: the module that owns it, its parameter name, and how it was found."""

    module_name: str
    param_name: str  # the parameter's canonical name in `module.named_parameters()`
    kind: str  # "linear", "conv1d" or "attention_in_proj"
    weight: torch.Tensor


def _canonical_names(module: nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in module.named_parameters()}


def linear_weights(module: nn.Module) -> list[LinearWeight]:
    """Every linear weight of the module in registration order (a shared weight once, under its first name)."""
    names = _canonical_names(module)
    out, seen = [], set()
    for mod_name, mod in module.named_modules():
        found = []
        if is_linear(mod):
            found.append(("conv1d" if is_conv1d(mod) else "linear", mod.weight))
        elif isinstance(mod, nn.MultiheadAttention):
            found.extend(("attention_in_proj", getattr(mod, attr)) for attr in MHA_INPUT_WEIGHTS
                         if isinstance(getattr(mod, attr, None), torch.Tensor))
        for kind, weight in found:
            if id(weight) in seen or id(weight) not in names:
                continue
            seen.add(id(weight))
            out.append(LinearWeight(mod_name, names[id(weight)], kind, weight))
    return out


def embedding_parameter_ids(module: nn.Module) -> set[int]:
    """ids of the parameters of every `nn.Embedding` (token and position tables)."""
    return {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)}


def embeddings(module: nn.Module) -> list[tuple[str, nn.Embedding]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Embedding)]


def readout_names(module: nn.Module) -> list[str]:
    """Names of the module's readout layers (see the module docstring for the rules), in registration order."""
    tables = [m for _, m in embeddings(module)]
    table_ids = {id(m.weight) for m in tables}
    vocab = {(m.embedding_dim, m.num_embeddings) for m in tables}
    linears = [(n, m) for n, m in module.named_modules() if is_linear(m)]
    found = [n for n, m in linears if type(m).__name__ in MUP_READOUTS or id(m.weight) in table_ids]
    if found:
        return found
    onto_vocab = [n for n, m in linears if linear_features(m) in vocab]
    if onto_vocab:
        return onto_vocab[-1:]
    return [linears[-1][0]] if linears else []


def tied_embedding(module: nn.Module, readout: nn.Module) -> nn.Embedding | None:
    """The embedding whose weight the readout shares (a tied readout), or None."""
    weight = getattr(readout, "weight", None)
    return next((m for _, m in embeddings(module) if m.weight is weight), None)


def module_kinds(module: nn.Module) -> dict[str, int]:
    """How many modules of each class hold parameters directly: for error messages that say what was found."""
    out: dict[str, int] = {}
    for _, mod in module.named_modules():
        if any(True for _ in mod.parameters(recurse=False)):
            out[type(mod).__name__] = out.get(type(mod).__name__, 0) + 1
    return out
