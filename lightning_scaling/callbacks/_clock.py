"""The run's clock: data seen (tokens, or samples), optimizer steps and the token budget, one per Trainer.

`ScalingTracker`, `PowerLR` and `GradualPruning` all advance with the data seen, so they share one `RunClock`
(`clock_of(trainer)`), and the data counted per batch is defined once: `tokens_fn` given to any one of them (two
different ones are an error), else `measure.default_tokens` (non-pad tokens when the batch has an attention mask).

Two counts are kept, so that no training step waits on the device or on the other ranks:

- the exact count: each micro-batch adds its local tokens, an int read from shapes or a device tensor (a mask's
  sum), and the sums are reduced across ranks only at a sync: the first optimizer step, every
  `trainer.log_every_n_steps` steps, a checkpoint and the end of training (one small all-reduce each);
- the schedule count `tokens`, which the learning rate and the sparsity follow and which must be the same on every
  rank: the exact count at each sync step, advanced in between by the tokens per optimizer step measured at the
  last sync (their mean so far). With fixed-size batches that is exact at every step; when batches vary (padding
  masks, length-grouped sampling) the schedule is exact at each sync and extrapolated in between.

The budget. With fixed-size batches the run's tokens are known from its length: `estimated_stepping_batches` x the
tokens of a step. When batches vary, that product is only an estimate, so it is re-estimated at each sync as the
tokens so far plus the remaining steps at the mean rate, and the owner warns once, and says at the end how far the
estimate moved; `total_tokens` on the callback replaces it.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

import torch

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.integrations.lightning import running_trainer, warn_rank_zero
from lightning_scaling.nn.measure import data_unit, default_sequences, default_tokens

STATE_VERSION = 2


class RunClock:
    """Data seen and optimizer steps of one run, identical on every rank (see the module docstring)."""

    def __init__(self):
        self.tokens_fn: Callable = default_tokens
        self.sequences_fn: Callable = default_sequences
        self._fn_owner: str | None = None
        self.unit: str | None = None  # "tokens" or "samples", from the first batch
        self.steps = 0
        self.tokens = 0  # schedule count
        self.sequences = 0
        self.step_tokens = 0  # tokens per optimizer step (the mean so far, over all ranks) as of the last sync
        self.step_sequences = 0
        self.exact_tokens = 0  # exact global counts as of the last sync
        self.exact_sequences = 0
        self.varied = False  # some micro-batch on some rank differed in size, or was counted on the device: as of
        # the last schedule sync, so that the schedule does not depend on when checkpoints reduced the counts
        self._varied_synced = False
        self.budget: int | None = None  # estimated run tokens (varied batches), updated at each sync
        self.budget_first: int | None = None
        self.mask_version = 0  # bumped whenever weights are pruned (the tracker recounts non-zeros then)
        self.batch_tokens = 0  # the last micro-batch's local count: int or device tensor
        self._local_tokens = 0
        self._local_sequences = 0
        self._local_varied = False
        self._first_batch_tokens: int | None = None
        self._batch_key = None
        self._step_key = None
        self._warned_budget = False
        self._trainer = None  # weak reference to the trainer whose fit this clock counts

    # -- wiring -----------------------------------------------------------------------------------------------
    def attach(self, owner: str, tokens_fn: Callable | None = None, sequences_fn: Callable | None = None) -> None:
        """Register a callback's counting functions; the first given is used by all, a different second is refused."""
        for name, fn in (("tokens_fn", tokens_fn), ("sequences_fn", sequences_fn)):
            if fn is None:
                continue
            current = getattr(self, name)
            if current not in (default_tokens, default_sequences) and current is not fn:
                raise ConfigurationError(
                    f"`{name}` is given to both {self._fn_owner} and {owner}, with different functions: the callbacks "
                    "share one clock, so give it to one of them"
                )
            setattr(self, name, fn)
            self._fn_owner = owner

    # -- per micro-batch and per step -------------------------------------------------------------------------
    def add_batch(self, trainer, batch, batch_idx: int) -> None:
        """Count a micro-batch (once, however many callbacks call this for it)."""
        key = (trainer.current_epoch, batch_idx)
        if key == self._batch_key:
            return
        self._batch_key = key
        if self.unit is None:
            self.unit = data_unit(batch)
        tokens = self.tokens_fn(batch)
        self.batch_tokens = tokens
        self._local_tokens = self._local_tokens + tokens
        self._local_sequences += int(self.sequences_fn(batch))
        if isinstance(tokens, torch.Tensor):
            self._local_varied = True
        elif self._first_batch_tokens is None:
            self._first_batch_tokens = int(tokens)
        elif int(tokens) != self._first_batch_tokens:
            self._local_varied = True

    def close_step(self, trainer) -> int:
        """Advance by one optimizer step (once per step); returns the schedule count after it."""
        key = trainer.global_step
        if key == self._step_key:
            return self.tokens
        self._step_key = key
        self.steps += 1
        every = max(int(trainer.log_every_n_steps or 1), 1)
        if self.steps == 1 or self.steps % every == 0:
            self.sync(trainer)
            self.tokens, self.sequences = self.exact_tokens, self.exact_sequences
            self.varied = self._varied_synced
            self.step_tokens = round(self.exact_tokens / self.steps)
            self.step_sequences = round(self.exact_sequences / self.steps)
            self._estimate_budget(trainer)
        else:
            self.tokens += self.step_tokens
            self.sequences += self.step_sequences
        return self.tokens

    def sync(self, trainer, extra=()) -> list:
        """Reduce the local counts (and `extra` values) across ranks into the exact totals.

        The only host read and collective of the clock; every rank must call it at the same point. Returns the
        `extra` values summed over ranks (ints on one process, floats across several).
        """
        values = [self._local_tokens, self._local_sequences, int(self._local_varied), *extra]
        if trainer.world_size > 1:
            device = trainer.strategy.root_device
            vec = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
            reduced = trainer.strategy.reduce(vec, reduce_op="sum").tolist()
            tokens, sequences, varied = (int(round(v)) for v in reduced[:3])
            out = reduced[3:]
        else:
            host = [int(v.item()) if isinstance(v, torch.Tensor) else v for v in values]
            tokens, sequences, varied = host[:3]
            out = host[3:]
        self.exact_tokens += tokens
        self.exact_sequences += sequences
        self._varied_synced = self._varied_synced or varied > 0
        self._local_tokens = self._local_sequences = 0
        self._local_varied = False
        return out

    # -- the budget -------------------------------------------------------------------------------------------
    def _estimate_budget(self, trainer) -> None:
        steps = _run_steps(trainer)
        if steps is None or not self.varied:
            return
        self.budget = self.exact_tokens + max(steps - self.steps, 0) * self.step_tokens
        if self.budget_first is None:
            self.budget_first = self.budget

    def run_tokens(self, trainer, owner: str, total_tokens: int | None = None) -> int | None:
        """The run's token budget: `total_tokens`, else from the run's length (see the module docstring).

        Known once the first optimizer step is closed; None when the run's length is unbounded.
        """
        if total_tokens is not None:
            return int(total_tokens)
        steps = _run_steps(trainer)
        if steps is None:
            return None
        if not self.varied:
            return steps * self.step_tokens
        if not self._warned_budget:
            self._warned_budget = True
            warn_rank_zero(
                trainer,
                f"{owner}: the run's token budget is estimated ({self.budget:.4g} tokens: {steps} steps at the mean "
                f"{self.step_tokens:.4g} tokens per step so far) because batches vary in size (padding, length "
                "grouping); it is re-estimated every `log_every_n_steps` steps. Pass `total_tokens` to fix it.",
            )
        return self.budget

    def budget_report(self) -> str | None:
        """How far the budget estimate moved over the run, or None when it was not estimated."""
        if self.budget_first is None or not self.budget_first:
            return None
        moved = self.budget / self.budget_first - 1.0
        return (f"the token budget was estimated at {self.budget_first:.6g} after the first step and at "
                f"{self.budget:.6g} at the last sync ({moved:+.1%}); {self.exact_tokens:.6g} tokens were counted")

    # -- checkpointing ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        # Every rank saves the callbacks' state at a checkpoint, so the counts since the last sync are reduced here;
        # the schedule count is left alone, so a resumed run follows the same schedule as an uninterrupted one.
        trainer = running_trainer(self._trainer)
        if trainer is not None:
            self.sync(trainer)
        return {
            "version": STATE_VERSION, "unit": self.unit, "steps": self.steps, "tokens": self.tokens,
            "sequences": self.sequences, "step_tokens": self.step_tokens, "step_sequences": self.step_sequences,
            "exact_tokens": self.exact_tokens, "exact_sequences": self.exact_sequences, "varied": self.varied,
            "varied_synced": self._varied_synced,
            "budget": self.budget, "budget_first": self.budget_first, "first_batch_tokens": self._first_batch_tokens,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ConfigurationError(f"the token clock's checkpoint state has version {state.get('version')!r}; "
                                     f"this version reads {STATE_VERSION}")
        for key in ("unit", "steps", "tokens", "sequences", "step_tokens", "step_sequences", "exact_tokens",
                    "exact_sequences", "varied", "budget", "budget_first"):
            setattr(self, key, state[key])
        self._first_batch_tokens = state["first_batch_tokens"]
        self._varied_synced = state["varied_synced"]
        self._local_tokens = self._local_sequences = 0
        self._batch_key = self._step_key = None


def _run_steps(trainer) -> int | None:
    steps = trainer.estimated_stepping_batches
    if steps is None or (isinstance(steps, float) and not math.isfinite(steps)) or steps <= 0:
        return None
    return int(steps)


_CLOCKS: weakref.WeakKeyDictionary[object, RunClock] = weakref.WeakKeyDictionary()


def clock_of(trainer, owner: str, tokens_fn: Callable | None = None,
             sequences_fn: Callable | None = None) -> RunClock:
    """The clock shared by every callback of this trainer's fit, created on first use."""
    clock = _CLOCKS.get(trainer)
    if clock is None:
        clock = _CLOCKS[trainer] = RunClock()
        clock._trainer = weakref.ref(trainer)
    clock.attach(owner, tokens_fn, sequences_fn)
    return clock


def release_clock(trainer) -> None:
    """Forget the trainer's clock at the end of its fit (a later fit starts a new one)."""
    _CLOCKS.pop(trainer, None)
