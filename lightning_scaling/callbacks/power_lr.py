"""`PowerLR`: the Power learning-rate scheduler of Shen et al. 2024 as a Lightning callback.

Before every optimizer step the callback computes the base learning rate from the tokens seen so far (the run's
shared clock, `_clock.RunClock`; the formula is `lightning_scaling.schedules.PowerSchedule`) and sets each parameter
group's learning rate to that value times the group's own multiplier. The multiplier is the group's initial learning
rate relative to the reference learning rate (see `group_multipliers`): 1 for a plain optimizer, muP's 1/width_mult
for hidden matrices under `mup.MuAdamW` or the `MuP` callback. The schedule never overwrites a group with an
absolute value.

The state (the clock, the batch size in sequences, the run's token budget, the multipliers) is saved in the
checkpoint, so the learning rate at every step of a resumed run equals the uninterrupted run's. A run resumed with
other settings continues from the checkpoint's tokens with the new settings, and says which changed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from lightning_scaling.callbacks._clock import RunClock, clock_of, release_clock
from lightning_scaling.integrations.lightning import Callback, override, warn_rank_zero
from lightning_scaling.options import Constraint, Integer, validate
from lightning_scaling.runs.schema import LR, POWER_DECAY_FRACTION
from lightning_scaling.schedules.lr import POWER_CONSTRAINTS, PowerSchedule, check_warmup_before_decay

if TYPE_CHECKING:
    from lightning_scaling.integrations.lightning import LightningModule, Optimizer, Trainer
from lightning_scaling.callbacks._state import changed_settings, check_state_version
from lightning_scaling.callbacks._types import (
    ClosedUnitInterval,
    DecayShape,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    PowerExponent,
)

STATE_VERSION = 2


class PowerLR(Callback):
    """Set the learning rate to the Power schedule, lr(n) = min(lr_max, beta a n^b), n = tokens seen.

    Args:
        a: amplitude (Shen et al. 2024, Sec. 4: 4).
        b: exponent (Shen et al. 2024, Sec. 4: -0.51).
        lr_max: cap (Shen et al. 2024, Sec. 4: 0.02).
        warmup_tokens: linear warmup to lr(warmup_tokens); 0 for none.
        total_tokens: the run's token budget for the decay phase; by default the run's length
            (`trainer.estimated_stepping_batches` x tokens per step, estimated when batches vary in size).
        decay_fraction: the decay phase is the last fraction of `total_tokens` (paper: 0.1); 0 for none.
        decay: "exponential" (paper), "linear" or "1-sqrt".
        batch_size: beta, sequences per optimizer step over all ranks and accumulation; measured at the first
            step when None.
        tokens_fn, sequences_fn: data / sequences in a batch, for every callback of the run (give them to one).
        log: log the base learning rate as `scaling/lr` to the trainer's loggers, at the first step and every
            `log_every_n_steps` steps (with step = the optimizer step it was used for) and at the end.

    Raises:
        ConfigurationError: an argument outside its range (the message names it).

    Example::

        trainer = pl.Trainer(max_steps=1000, callbacks=[PowerLR(warmup_tokens=1_000_000)])
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **POWER_CONSTRAINTS,
        "batch_size": Integer(above=0, or_none=True),  # sequences per step: whole
    }

    def __init__(  # noqa: PLR0913  # the keyword arguments are the callback's YAML keys: kept flat for LightningCLI
        self,
        a: PositiveFloat = 4.0,  # Shen et al. 2024, Sec. 4
        b: PowerExponent = -0.51,  # Shen et al. 2024, Sec. 4
        lr_max: PositiveFloat = 0.02,  # Shen et al. 2024, Sec. 4
        warmup_tokens: NonNegativeFloat = 0.0,
        total_tokens: PositiveFloat | None = None,
        decay_fraction: ClosedUnitInterval = 0.1,  # Shen et al. 2024: the last 10% of tokens
        decay: DecayShape = "exponential",
        batch_size: PositiveInt | None = None,
        tokens_fn: Callable | None = None,
        sequences_fn: Callable | None = None,
        log: bool = True,
    ):
        v = validate(self._parameter_constraints, a=a, b=b, lr_max=lr_max, warmup_tokens=warmup_tokens,
                     total_tokens=total_tokens, decay_fraction=decay_fraction, decay=decay, batch_size=batch_size)
        check_warmup_before_decay(v["warmup_tokens"], v["total_tokens"], v["decay_fraction"])
        self.a, self.b, self.lr_max = v["a"], v["b"], v["lr_max"]
        self.warmup_tokens = v["warmup_tokens"]
        self.total_tokens = v["total_tokens"]
        self.decay_fraction = v["decay_fraction"]
        self.decay = v["decay"]
        self.batch_size = v["batch_size"]
        self.tokens_fn, self.sequences_fn = tokens_fn, sequences_fn
        self.log_lr = log  # not `self.log`: Lightning sets `callback.log` to the module's log method
        self.clock = RunClock()
        self.schedule: PowerSchedule | None = None
        self.multipliers: list[list[float]] | None = None
        self.lr = math.nan  # the base learning rate of the last step
        self._last_logged_step = -1
        self._restored: dict | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key()  # identity only: a resume with changed settings still finds its state

    def settings(self) -> dict:
        return {"a": self.a, "b": self.b, "lr_max": self.lr_max, "warmup_tokens": self.warmup_tokens,
                "total_tokens": self.total_tokens, "decay_fraction": self.decay_fraction, "decay": self.decay,
                "batch_size": self.batch_size}

    # -- hooks ------------------------------------------------------------------------------------------------
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self.clock = clock_of(trainer, "PowerLR", self.tokens_fn, self.sequences_fn)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.lr_scheduler_configs:
            warn_rank_zero(
                trainer,
                "PowerLR sets the learning rate itself before every optimizer step; the scheduler returned by "
                "`configure_optimizers` is overridden. Remove it to silence this warning.",
            )
        if self.multipliers is None:  # a resumed run keeps the multipliers it started with
            self.multipliers = [group_multipliers(opt) for opt in trainer.optimizers]
        if trainer.is_global_zero:
            settings = {"scaling/power_a": self.a, "scaling/power_b": self.b, "scaling/power_lr_max": self.lr_max,
                        "scaling/power_warmup_tokens": self.warmup_tokens, "scaling/power_decay": self.decay,
                        POWER_DECAY_FRACTION: self.decay_fraction}
            for logger in trainer.loggers:
                logger.log_hyperparams(settings)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # every strategy has restored the checkpoint by now (sharded ones restore after `on_fit_start`)
        restored, self._restored = self._restored, None
        if restored is not None:
            changes = changed_settings(restored["settings"], self.settings())
            if changes:
                warn_rank_zero(trainer, f"PowerLR resumed with changed settings ({'; '.join(changes)}): the schedule "
                                        f"continues from the checkpoint's {self.clock.tokens:.6g} tokens with them")
                self.schedule = None  # rebuilt with the new settings at the next step
        elif trainer.ckpt_path:
            warn_rank_zero(trainer, f"PowerLR found no state of its own in the checkpoint {trainer.ckpt_path}: its "
                                    "schedule starts again from 0 tokens")

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx) -> None:
        self.clock.add_batch(trainer, batch, batch_idx)

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        n = self.clock.close_step(trainer)
        total = self.total_tokens
        if total is None and self.decay_fraction > 0:
            total = self.clock.run_tokens(trainer, "PowerLR")
        if self.schedule is None:
            self.schedule = self._build_schedule(total)
        elif self.schedule.total_tokens != total and total is not None:  # a re-estimated budget
            self.schedule = dataclasses.replace(self.schedule, total_tokens=float(total))
        self.lr = self.schedule.lr(n)
        index = next((i for i, opt in enumerate(trainer.optimizers) if opt is optimizer), 0)
        for group, multiplier in zip(optimizer.param_groups, self.multipliers[index]):
            group["lr"] = self.lr * multiplier
        step = trainer.global_step + 1  # the step this learning rate makes
        if self.log_lr and (step == 1 or step % max(int(trainer.log_every_n_steps or 1), 1) == 0):
            self._log(trainer, step)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.log_lr and trainer.global_step > 0:
            self._log(trainer, trainer.global_step)  # the last step's rate, unless it was just logged
        report = self.clock.budget_report()
        if report and self.total_tokens is None and self.decay_fraction > 0:
            warn_rank_zero(trainer, f"PowerLR: {report}")

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            release_clock(trainer)

    def _log(self, trainer, step: int) -> None:
        """`scaling/lr` at `step`, straight to the loggers (rank zero), at the logging interval: nothing per step."""
        if step == self._last_logged_step or not trainer.is_global_zero or math.isnan(self.lr):
            return
        self._last_logged_step = step
        for logger in trainer.loggers:
            logger.log_metrics({LR: self.lr}, step=step)

    def _build_schedule(self, total) -> PowerSchedule:
        batch_size = self.batch_size or self.clock.step_sequences
        return PowerSchedule(
            batch_size=batch_size, a=self.a, b=self.b, lr_max=self.lr_max, warmup_tokens=self.warmup_tokens,
            total_tokens=None if total is None else float(total), decay_fraction=self.decay_fraction,
            decay=self.decay,
        )

    # -- checkpointing ----------------------------------------------------------------------------------------
    @override
    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "clock": self.clock.state_dict(),
            "schedule": None if self.schedule is None else self.schedule.to_dict(),
            "multipliers": self.multipliers,
            "settings": self.settings(),
        }

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        check_state_version("PowerLR", state_dict, STATE_VERSION)
        self.clock.load_state_dict(state_dict["clock"])
        self.schedule = None if state_dict["schedule"] is None else PowerSchedule(**state_dict["schedule"])
        self.multipliers = state_dict["multipliers"]
        self._restored = state_dict


def group_multipliers(optimizer) -> list[float]:
    """Each group's learning rate relative to the reference one (muP's per-group scaling), e.g. [1.0, 0.25].

    The reference is the optimizer's default learning rate when some group uses it (a plain optimizer, muP's
    vector-like groups), else the largest group learning rate: groups that all set their own rate (torch fills the
    default with its own 1e-3) keep their ratios to the largest.
    """
    rates = [float(group.get("initial_lr", group["lr"])) for group in optimizer.param_groups]
    default = optimizer.defaults.get("lr")
    if isinstance(default, (int, float)) and default > 0 and any(math.isclose(r, default, rel_tol=1e-9) for r in rates):
        reference = float(default)
    else:
        reference = max(rates, default=0.0)
    return [r / reference if reference > 0 else 1.0 for r in rates]
