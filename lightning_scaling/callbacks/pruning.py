"""`GradualPruning`: sparse pre-training by gradual magnitude pruning (Jin et al. 2025; Zhu & Gupta 2017).

Sparsity follows the cubic schedule of `lightning_scaling.schedules.sparsity.cubic_sparsity` over the fraction of
training tokens done (the run's shared clock), from `start_fraction` (default 25%) to `end_fraction` (default 75%),
reaching `final_sparsity`. Every `update_every` optimizer steps the masks are recomputed by magnitude
(`lightning_scaling.nn.masks`); after every optimizer step with a mask in force the weights are multiplied by their
masks in place (an optimizer step post-hook, so no other callback ever sees a pruned weight revived by the step),
so pruned weights stay exactly zero. Masks and the schedule position are saved in the checkpoint and
restored, and every rank computes the same masks. Nothing here reads the device on the host or talks to the other
ranks in a training step (a sharded weight is gathered at a mask update).

The weights pruned: by default every linear weight but the readout and embedding-tied weights (see
`lightning_scaling.nn.masks.prunable_parameters`), chosen when training starts, after every strategy has wrapped the
model and restored the checkpoint. The run's token budget comes from `total_tokens`, or from the run's length.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch

from lightning_scaling.callbacks._clock import RunClock, clock_of, release_clock
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.integrations.lightning import Callback, check_strategy, override, warn_rank_zero
from lightning_scaling.nn.masks import (
    apply_masks,
    full_masks,
    magnitude_masks,
    masks_like,
    prunable_parameters,
    reset_optimizer_state,
    sparsity_of,
)
from lightning_scaling.options import Choice, Constraint, Integer, Patterns, validate
from lightning_scaling.schedules.sparsity import (
    END_FRACTION,
    PRUNING_CONSTRAINTS,
    START_FRACTION,
    check_start_before_end,
    cubic_sparsity,
)

if TYPE_CHECKING:
    from lightning_scaling.integrations.lightning import LightningModule, Optimizer, Trainer
from lightning_scaling.callbacks._state import changed_settings, check_state_version
from lightning_scaling.callbacks._types import ClosedUnitInterval, PositiveInt, PruningScope, Sparsity

STATE_VERSION = 2


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
        tokens_fn: data in a batch, for every callback of the run (give it to one; default: non-pad tokens).

    Raises:
        ConfigurationError: an argument outside its range (the message names it).

    Example::

        trainer = pl.Trainer(max_steps=2000, callbacks=[GradualPruning(final_sparsity=0.5)])
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **PRUNING_CONSTRAINTS,
        "update_every": Integer(1),
        "scope": Choice.of(PruningScope),
        "include": Patterns(or_none=True),
        "exclude": Patterns(or_none=True),
        "total_tokens": Integer(above=0, or_none=True),
    }

    def __init__(  # noqa: PLR0913  # the keyword arguments are the callback's YAML keys: kept flat for LightningCLI
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
        v = validate(self._parameter_constraints, final_sparsity=final_sparsity, start_fraction=start_fraction,
                     end_fraction=end_fraction, update_every=update_every, scope=scope, include=include,
                     exclude=exclude, total_tokens=total_tokens)
        check_start_before_end(v["start_fraction"], v["end_fraction"])
        self.final_sparsity = v["final_sparsity"]
        self.start_fraction = v["start_fraction"]
        self.end_fraction = v["end_fraction"]
        self.update_every = v["update_every"]
        self.scope = v["scope"]
        self.include = v["include"] or None
        self.exclude = v["exclude"] or None
        self.total_tokens = v["total_tokens"]
        self.tokens_fn = tokens_fn
        self.clock = RunClock()
        self.params: dict[str, torch.nn.Parameter] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.sparsity = 0.0  # target sparsity of the current masks
        self._run_tokens: int | None = self.total_tokens
        self._restored: dict | None = None
        self._stepped = False
        self._hooks: list = []  # the optimizers' step post-hooks

    @property
    @override
    def state_key(self) -> str:
        # identity only (which weights it prunes): a resume with another sparsity or schedule finds its state
        return self._generate_state_key(include=self.include, exclude=self.exclude)

    def settings(self) -> dict:
        return {"final_sparsity": self.final_sparsity, "start_fraction": self.start_fraction,
                "end_fraction": self.end_fraction, "update_every": self.update_every, "scope": self.scope,
                "total_tokens": self.total_tokens}

    @property
    def progress(self) -> float:
        """Fraction of the run's tokens seen (0 until the budget is known)."""
        return self.clock.tokens / self._run_tokens if self._run_tokens else 0.0

    # -- hooks ------------------------------------------------------------------------------------------------
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            check_strategy(trainer, "GradualPruning")
            self.clock = clock_of(trainer, "GradualPruning", self.tokens_fn)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after every strategy has wrapped the model and restored the checkpoint (sharded strategies restore after
        # `on_fit_start`), so the parameters are the ones trained and restored masks are applied to them
        self.params = prunable_parameters(pl_module, self.include, self.exclude)
        restored, self._restored = self._restored, None
        if restored is not None:
            masks = restored["masks"]
            mismatch = sorted(set(masks) ^ set(self.params))
            if mismatch:
                raise ConfigurationError(
                    f"the checkpoint's pruning masks do not match the model's prunable parameters: {mismatch}"
                )
            self.masks = masks_like(masks, self.params)
            if self.sparsity > 0:
                apply_masks(self.params, self.masks)
                self.clock.mask_version += 1
            changes = changed_settings(restored["settings"], self.settings())
            if changes:
                warn_rank_zero(trainer, f"GradualPruning resumed with changed settings ({'; '.join(changes)}): the "
                                        f"masks so far (sparsity {self.sparsity:.3g}) are kept and the schedule "
                                        "continues with the new settings")
        else:
            if trainer.ckpt_path:
                warn_rank_zero(trainer, f"GradualPruning found no state of its own in the checkpoint "
                                        f"{trainer.ckpt_path}: pruning starts again from dense masks")
            self.masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.params.items()}
        trainer_ref = weakref.ref(trainer)
        self._hooks = [opt.register_step_post_hook(lambda *_: self._after_optimizer_step(trainer_ref()))
                       for opt in trainer.optimizers]
        if trainer.is_global_zero:
            settings = {"scaling/pruning_final_sparsity": self.final_sparsity,
                        "scaling/pruning_start_fraction": self.start_fraction,
                        "scaling/pruning_end_fraction": self.end_fraction, "scaling/pruning_scope": self.scope,
                        "scaling/pruning_params": sum(p.numel() for p in self.params.values())}
            for logger in trainer.loggers:
                logger.log_hyperparams(settings)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx) -> None:
        self.clock.add_batch(trainer, batch, batch_idx)

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        self.clock.close_step(trainer)
        self._run_tokens = self.clock.run_tokens(trainer, "GradualPruning", self.total_tokens)
        if self._run_tokens is None:
            raise ConfigurationError(
                "GradualPruning needs the run's length to follow its schedule: pass `total_tokens`, or give the "
                "Trainer `max_steps` or `max_epochs`"
            )
        self._stepped = True

    def _after_optimizer_step(self, trainer) -> None:
        """Right after each optimizer step (a step post-hook, so before any other callback sees the weights): update
        the masks when due, and zero the pruned weights again."""
        if self._stepped:
            self._stepped = False
            target = cubic_sparsity(self.progress, self.final_sparsity, self.start_fraction, self.end_fraction)
            due = self.clock.steps % self.update_every == 0 or target >= self.final_sparsity
            if target > self.sparsity and due:
                self._update_masks(trainer, target)
        if self.sparsity > 0:  # a dense run multiplies nothing
            apply_masks(self.params, self.masks)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        report = self.clock.budget_report()
        if report and self.total_tokens is None:
            warn_rank_zero(trainer, f"GradualPruning: {report}")

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            release_clock(trainer)
            for hook in self._hooks:
                hook.remove()
            self._hooks = []

    @torch.no_grad()
    def _update_masks(self, trainer, target: float) -> None:
        new = magnitude_masks(self.params, target, self.scope, previous=self.masks)
        for name, p in self.params.items():
            reset_optimizer_state(trainer.optimizers, p, self.masks[name] & ~new[name])  # newly pruned entries
        self.masks = new
        self.sparsity = target
        self.clock.mask_version += 1

    def measured_sparsity(self) -> float:
        """Fraction of the selected weights currently masked."""
        return sparsity_of(self.masks)

    # -- checkpointing ----------------------------------------------------------------------------------------
    @override
    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "masks": full_masks(self.masks),
            "sparsity": self.sparsity,
            "clock": self.clock.state_dict(),
            "settings": self.settings(),
        }

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        check_state_version("GradualPruning", state_dict, STATE_VERSION)
        self.sparsity = state_dict["sparsity"]
        self.clock.load_state_dict(state_dict["clock"])
        self._restored = {"masks": dict(state_dict["masks"]), "settings": state_dict["settings"]}
