"""`PowerLR`: the Power learning-rate scheduler of Shen et al. 2024 as a Lightning callback.

Before every optimizer step the callback computes the base learning rate from the tokens seen so far (see
`lightning_scaling.schedules.PowerSchedule`) and sets each parameter group's learning rate to that value times the
group's own multiplier. The multiplier is the group's initial learning rate relative to the optimizer's default
learning rate, as configured by the module: 1 for a plain optimizer, muP's 1/width_mult for hidden matrices under
`mup.MuAdamW` or the `MuP` callback. The schedule never overwrites a group with an absolute value.

The state (tokens seen, the batch size in sequences, the run's token budget, the multipliers) is saved in the
checkpoint, so the learning rate at every step of a resumed run equals the uninterrupted run's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pytorch_lightning import Callback
from pytorch_lightning.utilities import rank_zero_warn

from ..errors import ConfigurationError
from ..schedules import PowerSchedule, validate_power_args
from ._clock import TokenClock, total_tokens_of_run
from ._state import check_state_version
from ._types import ClosedUnitInterval, DecayShape, NonNegativeFloat, PositiveFloat, PositiveInt, PowerExponent

STATE_VERSION = 1


class PowerLR(Callback):
    """Set the learning rate to the Power schedule, lr(n) = min(lr_max, beta a n^b), n = tokens seen.

    Args:
        a: amplitude (Shen et al. 2024, Sec. 4: 4).
        b: exponent (Shen et al. 2024, Sec. 4: -0.51).
        lr_max: cap (Shen et al. 2024, Sec. 4: 0.02).
        warmup_tokens: linear warmup to lr(warmup_tokens); 0 for none.
        total_tokens: the run's token budget for the decay phase; by default the run's length
            (`trainer.estimated_stepping_batches` x tokens per step) when it is bounded.
        decay_fraction: the decay phase is the last fraction of `total_tokens` (paper: 0.1); 0 for none.
        decay: "exponential" (paper), "linear" or "1-sqrt".
        batch_size: beta, sequences per optimizer step over all ranks and accumulation; inferred from the first
            step when None.
        tokens_fn, sequences_fn: tokens / sequences in a batch (default: from the shape of the input ids).
        log: log the base learning rate as `scaling/lr`.

    Raises:
        ConfigurationError: an argument outside its range (the message names it).

    Example::

        trainer = pl.Trainer(max_steps=1000, callbacks=[PowerLR(warmup_tokens=1_000_000)])
    """

    def __init__(
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
        validate_power_args(a=a, b=b, lr_max=lr_max, warmup_tokens=warmup_tokens, total_tokens=total_tokens,
                            decay_fraction=decay_fraction, decay=decay)
        if batch_size is not None and not (isinstance(batch_size, int) and batch_size > 0):
            raise ConfigurationError(f"`batch_size` must be an integer > 0 or None, got {batch_size!r}")
        self.a, self.b, self.lr_max = a, b, lr_max
        self.warmup_tokens = warmup_tokens
        self.total_tokens = total_tokens
        self.decay_fraction = decay_fraction
        self.decay = decay
        self.batch_size = batch_size
        self.log_lr = log  # not `self.log`: Lightning sets `callback.log` to the module's log method
        self.clock = TokenClock(tokens_fn, sequences_fn)
        self.schedule: PowerSchedule | None = None
        self.multipliers: list[list[float]] | None = None
        self.lr = math.nan  # the base learning rate of the last step

    @property
    def state_key(self) -> str:
        return self._generate_state_key(a=self.a, b=self.b, lr_max=self.lr_max, warmup_tokens=self.warmup_tokens)

    # -- hooks ------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.lr_scheduler_configs:
            rank_zero_warn(
                "PowerLR sets the learning rate itself before every optimizer step; the scheduler returned by "
                "`configure_optimizers` is overridden. Remove it to silence this warning."
            )
        if self.multipliers is None:  # a resumed run keeps the multipliers it started with
            self.multipliers = [group_multipliers(opt) for opt in trainer.optimizers]
        if trainer.is_global_zero:
            settings = {"scaling/power_a": self.a, "scaling/power_b": self.b, "scaling/power_lr_max": self.lr_max,
                        "scaling/power_warmup_tokens": self.warmup_tokens, "scaling/power_decay": self.decay,
                        "scaling/power_decay_fraction": self.decay_fraction}
            for logger in trainer.loggers:
                logger.log_hyperparams(settings)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.clock.add_batch(batch)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        n = self.clock.close_step(trainer, pl_module.device)
        if self.schedule is None:
            self.schedule = self._build_schedule(trainer)
        self.lr = self.schedule.lr(n)
        index = trainer.optimizers.index(optimizer) if optimizer in trainer.optimizers else 0
        for group, multiplier in zip(optimizer.param_groups, self.multipliers[index]):
            group["lr"] = self.lr * multiplier
        if self.log_lr:
            pl_module.log("scaling/lr", self.lr, on_step=True, on_epoch=False, batch_size=1)

    def _build_schedule(self, trainer) -> PowerSchedule:
        batch_size = self.batch_size or self.clock.last_step_sequences
        total = self.total_tokens
        if total is None and self.decay_fraction > 0:
            total = total_tokens_of_run(trainer, self.clock.last_step_tokens)
        return PowerSchedule(
            batch_size=batch_size, a=self.a, b=self.b, lr_max=self.lr_max, warmup_tokens=self.warmup_tokens,
            total_tokens=total, decay_fraction=self.decay_fraction, decay=self.decay,
        )

    # -- checkpointing ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "clock": self.clock.state_dict(),
            "schedule": None if self.schedule is None else self.schedule.to_dict(),
            "multipliers": self.multipliers,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        check_state_version("PowerLR", state_dict, STATE_VERSION)
        self.clock.load_state_dict(state_dict["clock"])
        self.schedule = None if state_dict["schedule"] is None else PowerSchedule(**state_dict["schedule"])
        self.multipliers = state_dict["multipliers"]


def group_multipliers(optimizer) -> list[float]:
    """Each group's learning rate relative to the optimizer's default (muP's per-group scaling), e.g. [1.0, 0.25]."""
    base = optimizer.defaults.get("lr")
    out = []
    for group in optimizer.param_groups:
        lr = group.get("initial_lr", group["lr"])
        if not base:
            out.append(1.0)
        else:
            out.append(float(lr) / float(base))
    return out
