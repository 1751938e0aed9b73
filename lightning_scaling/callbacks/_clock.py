"""Counting tokens and sequences per optimizer step, the same on every rank.

The Power schedule and the pruning schedule advance with tokens seen, and they change training, so every rank must
compute the same value: each micro-batch adds its local tokens (read from tensor shapes, no device sync), and when an
optimizer step closes the step's counts are summed across ranks (one tiny collective, skipped on one process).
Counts are Python ints, so a resumed run continues from exactly the same number.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..measure import default_sequences, default_tokens


class TokenClock:
    """Global tokens and sequences, advanced once per optimizer step.

    Args:
        tokens_fn: tokens in a batch (default: elements of the input ids).
        sequences_fn: sequences in a batch (default: leading dimension of the input ids).
    """

    def __init__(self, tokens_fn: Callable | None = None, sequences_fn: Callable | None = None):
        self.tokens_fn = tokens_fn or default_tokens
        self.sequences_fn = sequences_fn or default_sequences
        self.tokens = 0  # global tokens after the last closed optimizer step
        self.steps = 0  # optimizer steps closed
        self.last_step_tokens = 0
        self.last_step_sequences = 0
        self._pending_tokens = 0  # local, since the last closed step (accumulation micro-batches)
        self._pending_sequences = 0

    def add_batch(self, batch) -> None:
        self._pending_tokens += int(self.tokens_fn(batch))
        self._pending_sequences += int(self.sequences_fn(batch))

    def close_step(self, trainer, device=None) -> int:
        """Sum this step's counts over ranks and advance; returns the global tokens after the step."""
        tokens, sequences = self._pending_tokens, self._pending_sequences
        if trainer.world_size > 1:
            counts = torch.tensor([tokens, sequences], dtype=torch.float64, device=device)
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
            tokens, sequences = (int(round(v)) for v in counts.tolist())
        self.tokens += tokens
        self.steps += 1
        self.last_step_tokens, self.last_step_sequences = tokens, sequences
        self._pending_tokens = self._pending_sequences = 0
        return self.tokens

    def state_dict(self) -> dict:
        return {
            "tokens": self.tokens,
            "steps": self.steps,
            "last_step_tokens": self.last_step_tokens,
            "last_step_sequences": self.last_step_sequences,
            "pending_tokens": self._pending_tokens,
            "pending_sequences": self._pending_sequences,
        }

    def load_state_dict(self, state: dict) -> None:
        self.tokens = state["tokens"]
        self.steps = state["steps"]
        self.last_step_tokens = state["last_step_tokens"]
        self.last_step_sequences = state["last_step_sequences"]
        self._pending_tokens = state["pending_tokens"]
        self._pending_sequences = state["pending_sequences"]


def total_tokens_of_run(trainer, tokens_per_step: int) -> int | None:
    """The run's token budget from its length in optimizer steps (max_steps, or epochs x batches), if bounded."""
    steps = trainer.estimated_stepping_batches
    if steps is None or steps == float("inf") or steps <= 0:
        return None
    return int(steps) * int(tokens_per_step)
