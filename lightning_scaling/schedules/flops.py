"""Analytic training FLOPs of a decoder-only transformer.

Kaplan et al. 2020 (Sec. 2.1, Table 1): a forward pass costs about 2 N FLOPs per token for the N non-embedding
parameters (a multiply and an add per weight), plus attention over the context; the backward pass costs twice the
forward, so training costs C = 3 x forward, the familiar C = 6 N D.

Attention. Kaplan et al. count 2 n_layer n_ctx d_model forward FLOPs per token, which assumes the causal mask halves
the work of QK^T and of the attention-weighted sum of values. Fused kernels, and FLOP counters such as
`torch.utils.flop_counter`, compute and count the full n_ctx x n_ctx score matrix: 2 n_ctx d_model for QK^T plus
2 n_ctx d_model for AV, i.e. 4 n_layer n_ctx d_model per token. `transformer_training_flops` offers both
(`causal_discount`), defaulting to what is executed, so it agrees with the measured count.
"""

from __future__ import annotations

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.options import Integer, validate

FORWARD_FLOPS_PER_PARAM = 2  # a multiply and an add per weight per token (Kaplan et al. 2020, Table 1)
TRAINING_MULTIPLIER = 3  # backward = 2 x forward (Kaplan et al. 2020, Sec. 2.1)
FLOPS_PER_PARAM_TOKEN = TRAINING_MULTIPLIER * FORWARD_FLOPS_PER_PARAM  # C = 6 N D

# A transformer's shape, as the attention term needs it.
SHAPE_CONSTRAINTS = {name: Integer(above=0) for name in ("n_layer", "n_ctx", "d_model")}


def training_compute(N, D):
    """C = 6 N D (Kaplan et al. 2020, Sec. 2.1), the compute of the scaling law; floats or arrays.

    >>> training_compute(1e6, 2e9)
    1.2e+16
    """
    return FLOPS_PER_PARAM_TOKEN * N * D


def attention_forward_flops_per_token(n_layer: int, n_ctx: int, d_model: int, causal_discount: bool = False) -> float:
    """Forward FLOPs per token of the score and value products: 4 n_layer n_ctx d_model (2 with the discount)."""
    shape = validate(SHAPE_CONSTRAINTS, n_layer=n_layer, n_ctx=n_ctx, d_model=d_model)
    n_layer, n_ctx, d_model = shape["n_layer"], shape["n_ctx"], shape["d_model"]
    return (2 if causal_discount else 4) * n_layer * n_ctx * d_model


def transformer_training_flops(params: float, tokens: float, n_layer: int | None = None, n_ctx: int | None = None,
                               d_model: int | None = None, causal_discount: bool = False) -> float:
    """Training FLOPs: 6 N D, plus 3 x the attention forward term per token when the shape is given.

    Args:
        params: N, the parameters that multiply activations (non-embedding weights, including the readout).
        tokens: D, tokens trained on.
        n_layer, n_ctx, d_model: the transformer's shape; all three or none.
        causal_discount: count half of the attention products (Kaplan's convention) instead of all of them.

    Example:
        >>> transformer_training_flops(1e6, 1e9) == 6 * 1e6 * 1e9
        True
    """
    C = training_compute(float(params), float(tokens))
    shape = (n_layer, n_ctx, d_model)
    if all(v is None for v in shape):
        return C
    if any(v is None for v in shape):
        raise ConfigurationError(
            f"`n_layer`, `n_ctx` and `d_model` must be given together, got n_layer={n_layer!r}, n_ctx={n_ctx!r}, "
            f"d_model={d_model!r}"
        )
    per_token = attention_forward_flops_per_token(n_layer, n_ctx, d_model, causal_discount)
    return C + TRAINING_MULTIPLIER * per_token * float(tokens)
