"""A small decoder-only transformer (GPT) as a LightningModule, built for scaling-law experiments.

Design
------
* **Architecture.** Pre-LN GPT: learned token and position embeddings, ``n_layer`` blocks of
  ``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` (MLP width ``4 * d_model``, GELU), a final LayerNorm and an
  untied readout ``lm_head``. All linear layers inside the blocks have biases; the readout has none.
* **muP hooks.** Two switches make the model usable with Microsoft's ``mup`` package:

  - ``attn_scale="inverse"`` scales attention logits by ``1 / d_head`` (muP) instead of the standard
    ``1 / sqrt(d_head)`` (``"inverse_sqrt"``). The scale is passed explicitly to
    :func:`torch.nn.functional.scaled_dot_product_attention`.
  - ``readout="mup"`` makes ``lm_head`` a :class:`mup.MuReadout`, which divides its input by the readout's
    width multiplier. ``MuReadout.forward`` reads ``weight.infshape``, which only
    :func:`mup.set_base_shapes` sets: call it on the model (normally a muP callback does) before the first
    forward. ``zero_readout=True`` zero-initialises the readout, as muP practice recommends.

  The model itself stays a plain parametrisation otherwise: the muP optimizer and the width-dependent init
  of hidden weights are the job of the code that calls ``set_base_shapes``.
* **FLOP accounting.** The module exposes ``n_layer``, ``n_ctx`` (= ``seq_len``) and ``d_model`` as plain
  attributes, which is what an analytic ``6 N D`` + attention-term FLOP formula needs, and
  :attr:`TinyGPT.non_embedding_params` for ``N``. :meth:`TinyGPT.count_params` gives the exact parameter
  count without building the module (useful when laying out a sweep).
* **Optimisation.** AdamW with two groups: the 2-d weights of linear layers (including ``lm_head``) get
  ``weight_decay``; embeddings, LayerNorm parameters and biases get none.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from lightning_scaling.plugins import gpt_non_embedding_params

__all__ = ["TinyGPT", "ATTN_SCALES", "READOUTS"]

#: Allowed values of ``attn_scale`` and what they mean.
ATTN_SCALES = ("inverse_sqrt", "inverse")
#: Allowed values of ``readout``.
READOUTS = ("linear", "mup")


def _attention_scale(attn_scale: str, d_head: int, attn_mult: float = 1.0) -> float:
    if attn_scale == "inverse_sqrt":
        return 1.0 / math.sqrt(d_head)
    if attn_scale == "inverse":
        return attn_mult / d_head
    raise ValueError(f"attn_scale must be one of {list(ATTN_SCALES)}, got {attn_scale!r}")


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused QKV projection and an explicit logit scale."""

    def __init__(self, d_model: int, n_head: int, scale: float, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.d_head = d_model // n_head
        self.scale = scale
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        # (B, T, C) -> (B, n_head, T, d_head)
        q, k, v = (t.view(B, T, self.n_head, self.d_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward block: ``d_model -> 4 d_model -> d_model`` with GELU."""

    def __init__(self, d_model: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.act = nn.GELU()
        self.proj = nn.Linear(4 * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, d_model: int, n_head: int, scale: float, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head, scale, dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(pl.LightningModule):
    """A small pre-LN decoder-only transformer over a byte (or any small) vocabulary.

    Args:
        vocab_size: number of token ids (256 for raw bytes).
        d_model: residual stream width; must be divisible by ``n_head``.
        n_layer: number of transformer blocks.
        n_head: number of attention heads.
        seq_len: context length (number of learned positions); exposed as ``n_ctx``.
        attn_scale: ``"inverse_sqrt"`` (``1/sqrt(d_head)``, standard) or ``"inverse"`` (``attn_mult/d_head``, muP).
        attn_mult: muP's attention multiplier: with ``attn_scale="inverse"`` the scale is ``attn_mult / d_head``;
            ``sqrt(base d_head)`` makes it equal the standard scale at the base width.
        readout: ``"linear"`` (``nn.Linear``) or ``"mup"`` (``mup.MuReadout``; needs ``mup.set_base_shapes``
            before the first forward). Either way the layer is ``self.lm_head`` and has no bias.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay, applied to the 2-d weights of linear layers only.
        betas: AdamW betas.
        dropout: dropout on attention probabilities, residual branches and embeddings.
        init_std: standard deviation of the normal init of linear and embedding weights (biases are zero).
            A ``MuReadout`` keeps its own init.
        zero_readout: zero-initialise the readout weights (muP practice).

    ``forward(input_ids)`` maps a ``(B, T)`` LongTensor with ``T <= seq_len`` to ``(B, T, vocab_size)``
    logits. Training and validation batches are ``(input_ids, targets)`` pairs of the same shape.
    """

    def __init__(  # noqa: PLR0913  # the keyword arguments are the model's YAML keys: kept flat for LightningCLI
        self,
        vocab_size: int = 256,
        d_model: int = 64,
        n_layer: int = 2,
        n_head: int = 4,
        seq_len: int = 128,
        attn_scale: str = "inverse_sqrt",
        attn_mult: float = 1.0,
        readout: str = "linear",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.95),
        dropout: float = 0.0,
        init_std: float = 0.02,
        zero_readout: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("d_model", d_model), ("n_layer", n_layer),
                            ("n_head", n_head), ("seq_len", seq_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if d_model % n_head != 0:
            raise ValueError(f"d_model must be divisible by n_head, got d_model={d_model}, n_head={n_head}")
        scale = _attention_scale(attn_scale, d_model // n_head, attn_mult)  # validates attn_scale
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {list(READOUTS)}, got {readout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if init_std < 0:
            raise ValueError(f"init_std must be non-negative, got {init_std!r}")
        self.save_hyperparameters()

        # Plain attributes read by analytic FLOP formulas (6 N D + attention term).
        self.n_layer = n_layer
        self.n_ctx = seq_len
        self.d_model = d_model

        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(seq_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_head, scale, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        if readout == "mup":
            from mup import MuReadout

            self.lm_head: nn.Linear = MuReadout(d_model, vocab_size, bias=False, readout_zero_init=zero_readout)
        else:
            self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self._init_weights()

    # ------------------------------------------------------------------ init and parameter counts
    def _init_weights(self) -> None:
        std = self.hparams.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                if module is self.lm_head and self.hparams.readout == "mup":
                    continue  # MuReadout owns its init (zeroed itself if zero_readout)
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
        if self.hparams.zero_readout and self.hparams.readout == "linear":
            nn.init.zeros_(self.lm_head.weight)

    @staticmethod
    def count_params(
        d_model: int, n_layer: int, vocab_size: int = 256, seq_len: int = 128, *, include_embeddings: bool = True
    ) -> int:
        """Exact parameter count of ``TinyGPT(d_model=..., n_layer=..., vocab_size=..., seq_len=...)``.

        The non-embedding count is the built-in architecture plugin's formula for this model family,
        `gpt_non_embedding_params` (its docstring derives it); with ``include_embeddings`` the token ``V d`` and
        position ``seq_len * d`` tables are added. The count does not depend on ``n_head``, ``attn_scale`` or
        ``readout``.
        """
        n = gpt_non_embedding_params(d_model, n_layer, vocab_size)
        if include_embeddings:
            n += vocab_size * d_model + seq_len * d_model
        return n

    @property
    def non_embedding_params(self) -> int:
        """Number of parameters excluding the token and position embeddings (the readout is counted)."""
        embedding = {id(p) for p in (self.tok_emb.weight, self.pos_emb.weight)}
        return sum(p.numel() for p in self.parameters() if id(p) not in embedding)

    # ------------------------------------------------------------------ forward and steps
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[-1]
        if T > self.n_ctx:
            raise ValueError(f"input_ids has {T} positions but the model's seq_len is {self.n_ctx}")
        pos = torch.arange(T, device=input_ids.device)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        input_ids, targets = batch
        logits = self(input_ids)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True)
        return loss

    # ------------------------------------------------------------------ optimisation
    def param_groups(self) -> list[dict[str, Any]]:
        """The two AdamW groups: 2-d weights of linear layers (decayed) and everything else (not decayed)."""
        decay_ids = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear) and m.weight.dim() == 2}
        decay = [p for p in self.parameters() if id(p) in decay_ids]
        no_decay = [p for p in self.parameters() if id(p) not in decay_ids]
        return [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.param_groups(), lr=self.hparams.lr, betas=tuple(self.hparams.betas))
