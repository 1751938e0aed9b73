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

from lightning_scaling.errors import ConfigurationError

DECAY_SHAPES = ("exponential", "linear", "1-sqrt")
# The exponential decay falls by e^-EXP_DECAY_RATE over the decay phase before being shifted to end exactly at 0
# (Shen et al. 2024 decay exponentially "to 0"; a pure exponential never reaches it).
EXP_DECAY_RATE = 5.0


def decay_factor(progress: float, shape: str = "exponential") -> float:
    """Multiplier in [0, 1] at `progress` in [0, 1] of the decay phase: 1 at its start, 0 at its end."""
    p = min(max(progress, 0.0), 1.0)
    if shape == "exponential":
        floor = math.exp(-EXP_DECAY_RATE)
        return (math.exp(-EXP_DECAY_RATE * p) - floor) / (1.0 - floor)
    if shape == "linear":
        return 1.0 - p
    if shape == "1-sqrt":  # Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Durations"
        return 1.0 - math.sqrt(p)
    raise ConfigurationError(f"`decay` must be one of {DECAY_SHAPES}, got {shape!r}")


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
        validate_power_args(
            a=self.a, b=self.b, lr_max=self.lr_max, warmup_tokens=self.warmup_tokens,
            total_tokens=self.total_tokens, decay_fraction=self.decay_fraction, decay=self.decay,
        )
        if not (self.batch_size > 0 and math.isfinite(self.batch_size)):
            raise ConfigurationError(f"`batch_size` must be a number > 0, got {self.batch_size!r}")

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
            base = power(start) if start >= self.warmup_tokens else power(self.warmup_tokens) * start / self.warmup_tokens
            span = self.total_tokens - start
            return base * decay_factor((n - start) / span if span > 0 else 1.0, self.decay)
        if self.warmup_tokens > 0 and n < self.warmup_tokens:
            return power(self.warmup_tokens) * n / self.warmup_tokens
        return power(n)

    def to_dict(self) -> dict:
        return asdict(self)


def validate_power_args(*, a, b, lr_max, warmup_tokens, total_tokens, decay_fraction, decay) -> None:
    """Raise `ConfigurationError` naming the argument for any value outside its range."""
    if not (isinstance(a, (int, float)) and a > 0 and math.isfinite(a)):
        raise ConfigurationError(f"`a` must be a number > 0, got {a!r}")
    if not (isinstance(b, (int, float)) and -1.0 <= b < 0):
        raise ConfigurationError(f"`b` must be in [-1, 0), got {b!r}")
    if not (isinstance(lr_max, (int, float)) and 0 < lr_max <= 10):
        raise ConfigurationError(f"`lr_max` must be in (0, 10], got {lr_max!r}")
    if not (isinstance(warmup_tokens, (int, float)) and warmup_tokens >= 0 and math.isfinite(warmup_tokens)):
        raise ConfigurationError(f"`warmup_tokens` must be a number >= 0, got {warmup_tokens!r}")
    if total_tokens is not None:
        if not (isinstance(total_tokens, (int, float)) and total_tokens > 0 and math.isfinite(total_tokens)):
            raise ConfigurationError(f"`total_tokens` must be a number > 0 or None, got {total_tokens!r}")
        if warmup_tokens > total_tokens * (1.0 - decay_fraction):
            raise ConfigurationError(
                f"`warmup_tokens` must end before the decay phase starts at {total_tokens * (1 - decay_fraction):.6g} "
                f"tokens ((1 - decay_fraction) * total_tokens), got {warmup_tokens!r}"
            )
    if not (isinstance(decay_fraction, (int, float)) and 0 <= decay_fraction <= 1):
        raise ConfigurationError(f"`decay_fraction` must be in [0, 1], got {decay_fraction!r}")
    if decay not in DECAY_SHAPES:
        raise ConfigurationError(f"`decay` must be one of {DECAY_SHAPES}, got {decay!r}")
