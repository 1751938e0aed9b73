"""Models this project never wrote, as users bring them: tiny configs, synthetic data, nothing downloaded.

- `HFGPT2`: Hugging Face GPT-2 (`Conv1D` projections, `lm_head` tied to `wte`, `pad_token_id` set) trained on padded
  dict batches with an attention mask and labels, padded to each batch's longest sequence (so shapes vary).
- `HFLlama`: a tiny `LlamaConfig` (grouped-query attention, SwiGLU, RMSNorm, untied head).
- `DemoTransformer`: Lightning's own demo `Transformer` (encoder-decoder `nn.Transformer`, two-argument forward,
  a positional-encoding cache kept as a plain tensor attribute, readout named `decoder`).
- `MLPRegression`: a non-transformer on floating-point features, written against `pytorch_lightning` (the other
  namespace).

Every module keeps its size knobs as hyperparameters, so `MuP(base=...)` can rebuild it at the base width, and
`independent_flops` counts each one's training FLOPs from its structure, independently of the tracker.
"""

from __future__ import annotations

import lightning.pytorch as lp
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

VOCAB = 96
PAD = 0


# -- data ---------------------------------------------------------------------------------------------------------
class PaddedTokens(Dataset):
    """Token sequences of random length in [min_len, max_len] (seeded), for dict batches with padding."""

    def __init__(self, n: int = 4096, min_len: int = 8, max_len: int = 32, vocab: int = VOCAB, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.lengths = torch.randint(min_len, max_len + 1, (n,), generator=g).tolist()
        self.seqs = [torch.randint(1, vocab, (L,), generator=g) for L in self.lengths]

    def __len__(self):
        return len(self.seqs)

    def __getitem__(self, i):
        return self.seqs[i]


class RankSampler(torch.utils.data.Sampler):
    """Items rank, rank + world, ...; `skip` leaves out those of the batches already consumed (resume)."""

    def __init__(self, n: int, rank: int = 0, world: int = 1):
        self.indices = list(range(rank, n, world))
        self.skip = 0

    def __iter__(self):
        return iter(self.indices[self.skip:])

    def __len__(self):
        return len(self.indices)


class ResumableLoader(DataLoader):
    """A DataLoader that resumes mid-epoch (Lightning saves and restores its `state_dict`), sharded by rank, so a
    resumed run sees exactly the batches the uninterrupted run saw."""

    def __init__(self, dataset, batch_size: int, rank: int = 0, world: int = 1, collate_fn=None):
        super().__init__(dataset, batch_size=batch_size, sampler=RankSampler(len(dataset), rank, world),
                         collate_fn=collate_fn, drop_last=True)
        self._done = 0

    def __iter__(self):
        self._done = self.sampler.skip // self.batch_size
        for batch in super().__iter__():
            self._done += 1
            yield batch
        self.sampler.skip = 0

    def state_dict(self):
        return {"done": self._done}

    def load_state_dict(self, state):
        self.sampler.skip = int(state["done"]) * self.batch_size
        self._done = int(state["done"])


def pad_collate(seqs):
    """Pad to the batch's longest sequence: input_ids, attention_mask, labels (-100 at padding)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class FixedTokens(Dataset):
    """(input, target) pairs of fixed length from a seeded random stream."""

    def __init__(self, n: int = 4096, T: int = 16, vocab: int = VOCAB, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.data = torch.randint(0, vocab, (n, T + 1), generator=g)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i, :-1], self.data[i, 1:]


class Regression(Dataset):
    def __init__(self, n: int = 4096, features: int = 12, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, features, generator=g)
        w = torch.randn(features, 1, generator=g)
        self.y = torch.tanh(self.x @ w) + 0.1 * torch.randn(n, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


# -- Hugging Face -------------------------------------------------------------------------------------------------
class HFGPT2(lp.LightningModule):
    def __init__(self, n_embd: int = 32, n_layer: int = 2, n_head: int = 2, vocab_size: int = VOCAB,
                 n_positions: int = 64, lr: float = 1e-3, batch_size: int = 8):
        super().__init__()
        self.save_hyperparameters()
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(n_embd=n_embd, n_layer=n_layer, n_head=n_head, vocab_size=vocab_size,
                            n_positions=n_positions, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
        self.model = GPT2LMHeadModel(config)

    def training_step(self, batch, batch_idx):
        return self.model(**batch).loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self):
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self._trainer else (0, 1)
        return ResumableLoader(PaddedTokens(), self.hparams.batch_size, rank, world, collate_fn=pad_collate)


class HFLlama(lp.LightningModule):
    def __init__(self, hidden_size: int = 32, intermediate_size: int = 64, num_hidden_layers: int = 2,
                 num_attention_heads: int = 4, num_key_value_heads: int = 2, vocab_size: int = VOCAB,
                 lr: float = 1e-3, batch_size: int = 8):
        super().__init__()
        self.save_hyperparameters()
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(hidden_size=hidden_size, intermediate_size=intermediate_size,
                             num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                             num_key_value_heads=num_key_value_heads, vocab_size=vocab_size,
                             max_position_embeddings=64, tie_word_embeddings=False, pad_token_id=PAD)
        self.model = LlamaForCausalLM(config)

    def training_step(self, batch, batch_idx):
        ids, target = batch
        return self.model(input_ids=ids, labels=ids).loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self):
        return DataLoader(FixedTokens(), batch_size=self.hparams.batch_size)


# -- Lightning's demo ---------------------------------------------------------------------------------------------
class DemoTransformer(lp.LightningModule):
    def __init__(self, ninp: int = 32, nhead: int = 2, nhid: int = 64, nlayers: int = 1, vocab_size: int = VOCAB,
                 lr: float = 1e-3, batch_size: int = 8):
        super().__init__()
        self.save_hyperparameters()
        from lightning.pytorch.demos import Transformer

        self.model = Transformer(vocab_size=vocab_size, ninp=ninp, nhead=nhead, nhid=nhid, nlayers=nlayers,
                                 dropout=0.0)

    def forward(self, inputs, target):  # the demo's two-argument forward
        return self.model(inputs, target)

    def training_step(self, batch, batch_idx):
        inputs, target = batch
        return torch.nn.functional.nll_loss(self(inputs, target), target.reshape(-1))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self):
        return DataLoader(FixedTokens(), batch_size=self.hparams.batch_size)


# -- a non-transformer, in the other namespace ----------------------------------------------------------------------
try:
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover - the dev extra installs it
    pl = None

if pl is not None:

    class MLPRegression(pl.LightningModule):
        """An MLP on floating-point features: a `pytorch_lightning.LightningModule`, data counted in samples."""

        def __init__(self, features: int = 12, width: int = 64, depth: int = 2, lr: float = 1e-3,
                     batch_size: int = 16):
            super().__init__()
            self.save_hyperparameters()
            layers, d = [], features
            for _ in range(depth):
                layers += [nn.Linear(d, width), nn.ReLU()]
                d = width
            layers.append(nn.Linear(d, 1))
            self.net = nn.Sequential(*layers)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)

        def train_dataloader(self):
            return DataLoader(Regression(features=self.hparams.features), batch_size=self.hparams.batch_size)


def mlp_class():
    """`MLPRegression` (needs pytorch_lightning, which the dev extra installs)."""
    if pl is None:
        import pytest

        pytest.skip("pytorch_lightning is not installed")
    return MLPRegression


# -- an independent FLOP count ------------------------------------------------------------------------------------
def independent_flops(module: nn.Module, positions: int, context: int, attention_calls: int, d_model: int) -> float:
    """Training FLOPs from the model's structure: 6 x (every matrix-multiply weight, a tied readout's once, as the
    `nn.Linear` that multiplies it) per position, plus 3 x 4 x context x d_model per position for each attention
    call (scores and values, full matrix).

    Args:
        positions: B x T positions processed (padding included: the kernels compute it).
        context: T, the length attended over.
        attention_calls: attention operations per forward (self-attention per layer; an encoder-decoder adds cross).
    """
    weights = 0
    seen = set()
    for m in module.modules():
        for name in ("weight", "in_proj_weight"):
            w = getattr(m, name, None)
            is_matmul = isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D" or name == "in_proj_weight"
            if isinstance(w, torch.Tensor) and is_matmul and id(w) not in seen:
                seen.add(id(w))
                weights += w.numel()
    return 6.0 * weights * positions + 3.0 * 4.0 * context * d_model * positions * attention_calls

