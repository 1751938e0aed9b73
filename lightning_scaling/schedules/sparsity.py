"""Sparsity schedules and the average non-zero parameter count of sparse pre-training.

Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune", Eq. 1) raises sparsity along a cubic
from s_i at t0 to s_f at t1 (here s_i = 0: pre-training starts dense):

    s(t) = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3,     t0 <= t <= t1.

Jin et al. 2025 ("The Journey Matters: Average Parameter Count over Pre-training Unifies Sparse and Dense Scaling
Laws") prune during pre-training from 25% to 75% of the training compute, and show that the sparse model follows the
dense law when N is replaced by the token-weighted average non-zero count N_avg. For the cubic schedule over the
fractions [a, b] of training (s_i = 0), the mean sparsity over training is

    mean s = s_f (0.75 (b - a) + (1 - b))           (the cubic's mean over [a, b] is 3/4 of s_f),

so N_avg = N (1 - mean s), e.g. N (1 - 0.625 s_f) for the default 0.25..0.75.
"""

from __future__ import annotations

import math

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.options import Interval, validate

START_FRACTION = 0.25  # Jin et al. 2025, Sec. 4: start pruning at 25% of training compute
END_FRACTION = 0.75  # Jin et al. 2025, Sec. 4: reach the final sparsity at 75%


# The pruning schedule's arguments and their allowed values (the `GradualPruning` callback declares the same).
PRUNING_CONSTRAINTS = {
    "final_sparsity": Interval(0, 1, closed="left"),  # 1 would prune every weight
    "start_fraction": Interval(0, 1),
    "end_fraction": Interval(0, 1),
}


def validate_pruning_args(*, final_sparsity, start_fraction, end_fraction) -> dict:
    """The arguments checked against `PRUNING_CONSTRAINTS` (text converted) and the start before the end.

    Raises:
        ConfigurationError: a value outside its range (the message names the argument).
    """
    values = validate(PRUNING_CONSTRAINTS, final_sparsity=final_sparsity, start_fraction=start_fraction,
                      end_fraction=end_fraction)
    check_start_before_end(values["start_fraction"], values["end_fraction"])
    return values


def check_start_before_end(start_fraction: float, end_fraction: float) -> None:
    """Raise `ConfigurationError` unless pruning starts before it ends."""
    if not start_fraction < end_fraction:
        raise ConfigurationError(
            f"`start_fraction` must be < `end_fraction`, got start_fraction={start_fraction!r}, "
            f"end_fraction={end_fraction!r}"
        )


def cubic_sparsity(progress: float, final_sparsity: float, start_fraction: float = START_FRACTION,
                   end_fraction: float = END_FRACTION) -> float:
    """Target sparsity at `progress` (fraction of training done, in [0, 1]) under the cubic schedule.

    0 before `start_fraction` (dense training), the cubic of Zhu & Gupta 2017 in between, `final_sparsity` after
    `end_fraction`.

    Example:
        >>> round(cubic_sparsity(0.5, 0.8), 12)  # half-way through the window: 1 - 1/8 of the way there
        0.7
    """
    if progress < start_fraction:
        return 0.0
    if progress >= end_fraction:
        return float(final_sparsity)
    x = (progress - start_fraction) / (end_fraction - start_fraction)
    return final_sparsity - final_sparsity * (1.0 - x) ** 3  # Zhu & Gupta 2017, Eq. 1 with s_i = 0


def mean_sparsity(final_sparsity: float, start_fraction: float = START_FRACTION,
                  end_fraction: float = END_FRACTION) -> float:
    """Token-weighted mean sparsity over training of the cubic schedule: s_f (0.75 (b - a) + (1 - b))."""
    return final_sparsity * (0.75 * (end_fraction - start_fraction) + (1.0 - end_fraction))


def average_params(params: float, final_sparsity: float, start_fraction: float = START_FRACTION,
                   end_fraction: float = END_FRACTION, prunable_fraction: float = 1.0) -> float:
    """N_avg of a run that prunes `prunable_fraction` of its N parameters on the cubic schedule."""
    return params * (1.0 - prunable_fraction * mean_sparsity(final_sparsity, start_fraction, end_fraction))


def initial_params_for_average(params_avg: float, final_sparsity: float, start_fraction: float = START_FRACTION,
                               end_fraction: float = END_FRACTION, prunable_fraction: float = 1.0) -> float:
    """The dense N to start from so that the run's N_avg is `params_avg` (inverse of `average_params`)."""
    keep = 1.0 - prunable_fraction * mean_sparsity(final_sparsity, start_fraction, end_fraction)
    if keep <= 0 or not math.isfinite(keep):
        raise ConfigurationError(f"the schedule prunes everything: mean kept fraction {keep!r}")
    return params_avg / keep
