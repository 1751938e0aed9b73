"""`GradualPruning`: sparse pre-training by gradual magnitude pruning (Jin et al. 2025; Zhu & Gupta 2017).

Sparsity follows the cubic schedule of `lightning_scaling.sparsity.cubic_sparsity` over the fraction of training
tokens done, from `start_fraction` (default 25%) to `end_fraction` (default 75%), reaching `final_sparsity`. Every
`update_every` optimizer steps the masks are recomputed by magnitude (`lightning_scaling.pruning`); after every
optimizer step the weights are multiplied by their masks in place, so pruned weights stay exactly zero. Masks and
the schedule position are saved in the checkpoint and restored, and every rank computes the same masks.

The run's token budget comes from `total_tokens`, or from the run's length (`trainer.estimated_stepping_batches`
times the tokens of an optimizer step).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pytorch_lightning import Callback

from ..errors import ConfigurationError
from ..pruning import SCOPES, apply_masks, magnitude_masks, prunable_parameters, reset_optimizer_state, sparsity_of
from ..sparsity import END_FRACTION, START_FRACTION, cubic_sparsity, validate_pruning_args
from ._clock import TokenClock, total_tokens_of_run
from ._state import check_state_version
from ._types import ClosedUnitInterval, PositiveInt, PruningScope, Sparsity

STATE_VERSION = 1


class GradualPruning(Callback):
    """Prune Linear weights by magnitude on a cubic schedule over training tokens.

    Args:
        final_sparsity: fraction of the selected weights pruned at the end, in [0, 1).
        start_fraction: fraction of training tokens at which pruning starts (Jin et al. 2025: 0.25).
        end_fraction: fraction at which `final_sparsity` is reached (Jin et al. 2025: 0.75).
        update_every: recompute the masks every this many optimizer steps.
        scope: "layer" (every tensor to the same sparsity) or "global" (one threshold over all).
        include: fnmatch patterns of parameter names to prune, replacing the default (Linear weights except the
            readout).
        exclude: fnmatch patterns of parameter names never to prune.
        total_tokens: the run's token budget; by default the run's length in steps x tokens per step.
        tokens_fn: tokens in a batch (default: elements of the input ids).

    Raises:
        ConfigurationError: an argument outside its range (the message names it).

    Example::

        trainer = pl.Trainer(max_steps=2000, callbacks=[GradualPruning(final_sparsity=0.5)])
    """

    def __init__(
        self,
        final_sparsity: Sparsity = 0.5,
        start_fraction: ClosedUnitInterval = START_FRACTION,  # Jin et al. 2025, Sec. 4
        end_fraction: ClosedUnitInterval = END_FRACTION,  # Jin et al. 2025, Sec. 4
        update_every: PositiveInt = 10,
        scope: PruningScope = "layer",
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        total_tokens: PositiveInt | None = None,
        tokens_fn: Callable | None = None,
    ):
        validate_pruning_args(final_sparsity=final_sparsity, start_fraction=start_fraction, end_fraction=end_fraction)
        if not (isinstance(update_every, int) and update_every >= 1):
            raise ConfigurationError(f"`update_every` must be an integer >= 1, got {update_every!r}")
        if scope not in SCOPES:
            raise ConfigurationError(f"`scope` must be one of {SCOPES}, got {scope!r}")
        if total_tokens is not None and not (isinstance(total_tokens, int) and total_tokens > 0):
            raise ConfigurationError(f"`total_tokens` must be an integer > 0 or None, got {total_tokens!r}")
        for name, value in (("include", include), ("exclude", exclude)):
            if value is not None and not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
                raise ConfigurationError(f"`{name}` must be a list of name patterns or None, got {value!r}")
        self.final_sparsity = final_sparsity
        self.start_fraction = start_fraction
        self.end_fraction = end_fraction
        self.update_every = update_every
        self.scope = scope
        self.include = list(include) if include else None
        self.exclude = list(exclude) if exclude else None
        self.total_tokens = total_tokens
        self.clock = TokenClock(tokens_fn)
        self.params: dict[str, torch.nn.Parameter] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.sparsity = 0.0  # target sparsity of the current masks
        self._run_tokens: int | None = total_tokens
        self._restored: dict | None = None
        self._stepped = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(final_sparsity=self.final_sparsity, start_fraction=self.start_fraction,
                                        end_fraction=self.end_fraction, scope=self.scope)

    @property
    def progress(self) -> float:
        """Fraction of the run's tokens seen (0 until the budget is known)."""
        return self.clock.tokens / self._run_tokens if self._run_tokens else 0.0

    # -- hooks ------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        self.params = prunable_parameters(pl_module, self.include, self.exclude)
        if not self.params:
            raise ConfigurationError(
                "GradualPruning found no parameters to prune: the module has no Linear layer besides its readout, "
                f"or `include`={self.include!r} / `exclude`={self.exclude!r} match nothing"
            )
        if self._restored is not None:
            missing = sorted(set(self._restored) ^ set(self.params))
            if missing:
                raise ConfigurationError(
                    f"the checkpoint's pruning masks do not match the model's prunable parameters: {missing}"
                )
            self.masks = {n: m.to(self.params[n].device) for n, m in self._restored.items()}
            self._restored = None
            apply_masks(self.params, self.masks)
        else:
            self.masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.params.items()}
        if trainer.is_global_zero:
            settings = {"scaling/pruning_final_sparsity": self.final_sparsity,
                        "scaling/pruning_start_fraction": self.start_fraction,
                        "scaling/pruning_end_fraction": self.end_fraction, "scaling/pruning_scope": self.scope,
                        "scaling/pruning_params": sum(p.numel() for p in self.params.values())}
            for logger in trainer.loggers:
                logger.log_hyperparams(settings)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.clock.add_batch(batch)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.clock.close_step(trainer, pl_module.device)
        if self._run_tokens is None:
            self._run_tokens = total_tokens_of_run(trainer, self.clock.last_step_tokens)
            if self._run_tokens is None:
                raise ConfigurationError(
                    "GradualPruning needs the run's length to follow its schedule: pass `total_tokens`, or give the "
                    "Trainer `max_steps` or `max_epochs`"
                )
        self._stepped = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._stepped:  # an accumulation micro-batch: no optimizer step happened
            return
        self._stepped = False
        target = cubic_sparsity(self.progress, self.final_sparsity, self.start_fraction, self.end_fraction)
        due = self.clock.steps % self.update_every == 0 or target >= self.final_sparsity
        if target > self.sparsity and due:
            self._update_masks(trainer, target)
        apply_masks(self.params, self.masks)

    @torch.no_grad()
    def _update_masks(self, trainer, target: float) -> None:
        new = magnitude_masks(self.params, target, self.scope, previous=self.masks)
        for name, p in self.params.items():
            newly_pruned = self.masks[name] & ~new[name]
            if newly_pruned.any():
                reset_optimizer_state(trainer.optimizers, p, newly_pruned)
        self.masks = new
        self.sparsity = target

    def measured_sparsity(self) -> float:
        """Fraction of the selected weights currently masked."""
        return sparsity_of(self.masks)

    # -- checkpointing ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "masks": {n: m.detach().cpu() for n, m in self.masks.items()},
            "sparsity": self.sparsity,
            "run_tokens": self._run_tokens,
            "clock": self.clock.state_dict(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        check_state_version("GradualPruning", state_dict, STATE_VERSION)
        self._restored = dict(state_dict["masks"])
        self.sparsity = state_dict["sparsity"]
        self._run_tokens = state_dict["run_tokens"]
        self.clock.load_state_dict(state_dict["clock"])
