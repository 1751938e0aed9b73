"""Learning-rate schedules as pure functions of the number of tokens seen.

The Power scheduler (Shen et al. 2024, "Power Scheduler: A Batch Size and Token Number Agnostic Learning Rate
Scheduler", Eq. 5-7). Under WSD the optimal learning rate follows eta_opt = beta a T^b in the batch size beta
(sequences per optimizer step) and the tokens T; the Power scheduler uses that law as the schedule itself,

    eta_power(n) = min(eta_max, beta * a * n^b),      n = tokens seen so far,

so neither the batch size nor the token budget needs re-tuning. The full schedule (their Eq. 7) adds a linear
warmup to eta_power(n_warmup) and, when the total is known, a decay to zero over the last part of training
(exponential in the paper; linear and 1-sqrt offered too). With muP the value is the *base* learning rate: each
parameter group multiplies it by its own muP multiplier (`PowerLR` callback).

IBM's reference code has no decay phase and divides by zero when warmup is 0. Here warmup 0 means none, and the
decay phase exists only when `total_tokens` is given.

"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import get_args

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.options import Choice, DecayShape, Interval, Positive, validate

DECAY_SHAPES = get_args(DecayShape)
# The Power schedule's arguments and their allowed values (the `PowerLR` callback declares the same).
POWER_CONSTRAINTS = {
    "a": Positive(),
    "b": Interval(-1, 0, closed="left"),  # a decreasing power law, no steeper than 1/n
    "lr_max": Interval(0, 10, closed="right"),  # above 10 is a typo, not a learning rate
    "warmup_tokens": Interval(0, None),
    "total_tokens": Positive(or_none=True),
    "decay_fraction": Interval(0, 1),
    "decay": Choice.of(DecayShape),
}
# The exponential decay falls by e^-EXP_DECAY_RATE over the decay phase before being shifted to end exactly at 0
# (Shen et al. 2024 decay exponentially "to 0"; a pure exponential never reaches it).
EXP_DECAY_RATE = 5.0


def decay_factor(progress: float, shape: str = "exponential") -> float:
    """Multiplier in [0, 1] at `progress` in [0, 1] of the decay phase: 1 at its start, 0 at its end."""
    shape = POWER_CONSTRAINTS["decay"].check("decay", shape)
    p = min(max(progress, 0.0), 1.0)
    if shape == "exponential":
        floor = math.exp(-EXP_DECAY_RATE)
        return (math.exp(-EXP_DECAY_RATE * p) - floor) / (1.0 - floor)
    if shape == "linear":
        return 1.0 - p
    # "1-sqrt": Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Durations"
    return 1.0 - math.sqrt(p)


def power_lr(tokens: float, batch_size: float, a: float = 4.0, b: float = -0.51, lr_max: float = 0.02) -> float:
    """eta_power(n) = min(lr_max, batch_size * a * n^b) (Shen et al. 2024, Eq. 6); lr_max at n = 0."""
    if tokens <= 0:
        return lr_max
    return min(lr_max, batch_size * a * tokens**b)


@dataclass(frozen=True)
class PowerSchedule:
    """The full Power schedule: warmup, power law, optional decay to zero (Shen et al. 2024, Eq. 7).

    Args:
        batch_size: beta, sequences per optimizer step (all ranks, all accumulation micro-batches).
        a: amplitude of the power law. Shen et al. 2024, Sec. 4: a = 4 (with muP, transfers across sizes).
        b: exponent of the power law. Shen et al. 2024, Sec. 4: b = -0.51.
        lr_max: cap of the learning rate. Shen et al. 2024, Sec. 4: 0.02.
        warmup_tokens: linear warmup from 0 to eta_power(warmup_tokens); 0 for none.
        total_tokens: the run's token budget; the decay phase exists only when it is given.
        decay_fraction: the decay phase is the last `decay_fraction` of `total_tokens` (paper: 10%).
        decay: "exponential" (the paper), "linear" or "1-sqrt".

    Example:
        >>> s = PowerSchedule(batch_size=16, warmup_tokens=0)
        >>> round(s.lr(1e6), 6) == round(min(0.02, 16 * 4 * 1e6 ** -0.51), 6)
        True
    """

    batch_size: float
    a: float = 4.0  # Shen et al. 2024, Sec. 4
    b: float = -0.51  # Shen et al. 2024, Sec. 4
    lr_max: float = 0.02  # Shen et al. 2024, Sec. 4
    warmup_tokens: float = 0.0
    total_tokens: float | None = None
    decay_fraction: float = 0.1  # Shen et al. 2024, Sec. 5: decay over the last 10% of tokens
    decay: str = "exponential"

    def __post_init__(self):
        values = validate_power_args(
            a=self.a, b=self.b, lr_max=self.lr_max, warmup_tokens=self.warmup_tokens,
            total_tokens=self.total_tokens, decay_fraction=self.decay_fraction, decay=self.decay,
        )
        values["batch_size"] = Positive().check("batch_size", self.batch_size)
        for name, value in values.items():  # numbers given as text, converted
            object.__setattr__(self, name, value)

    @property
    def decay_start(self) -> float | None:
        if self.total_tokens is None:
            return None
        return self.total_tokens * (1.0 - self.decay_fraction)

    def power(self, tokens: float) -> float:
        """eta_power at `tokens`, without warmup or decay."""
        return power_lr(tokens, self.batch_size, self.a, self.b, self.lr_max)

    def lr(self, tokens: float) -> float:
        """The learning rate after `tokens` tokens."""
        n = float(tokens)
        power = self.power
        start = self.decay_start
        if start is not None and n >= start:
            # the decay starts from the value the schedule had reached at its start
            warmup = self.warmup_tokens
            base = power(start) if start >= warmup else power(warmup) * start / warmup
            span = self.total_tokens - start
            return base * decay_factor((n - start) / span if span > 0 else 1.0, self.decay)
        if self.warmup_tokens > 0 and n < self.warmup_tokens:
            return power(self.warmup_tokens) * n / self.warmup_tokens
        return power(n)

    def to_dict(self) -> dict:
        return asdict(self)


def validate_power_args(*, a, b, lr_max, warmup_tokens, total_tokens, decay_fraction, decay) -> dict:
    """The arguments checked against `POWER_CONSTRAINTS` (text converted) and the decay phase after the warmup.

    Raises:
        ConfigurationError: a value outside its range (the message names the argument).
    """
    values = validate(POWER_CONSTRAINTS, a=a, b=b, lr_max=lr_max, warmup_tokens=warmup_tokens,
                      total_tokens=total_tokens, decay_fraction=decay_fraction, decay=decay)
    check_warmup_before_decay(values["warmup_tokens"], values["total_tokens"], values["decay_fraction"])
    return values


def check_warmup_before_decay(warmup_tokens: float, total_tokens: float | None, decay_fraction: float) -> None:
    """Raise `ConfigurationError` when the warmup ends after the decay phase starts."""
    if total_tokens is not None and warmup_tokens > total_tokens * (1.0 - decay_fraction):
        raise ConfigurationError(
            f"`warmup_tokens` must end before the decay phase starts at {total_tokens * (1 - decay_fraction):.6g} "
            f"tokens ((1 - decay_fraction) * total_tokens), got {warmup_tokens!r}"
        )
