"""Pure schedules and formulas (no numpy needed): learning-rate schedules over tokens seen (Power, WSD, cosine),
the cubic sparsity schedule and N_avg, and training FLOPs (6ND plus attention).

- `PowerSchedule`, `power_lr`, `decay_factor` (`lr`): the Power scheduler of Shen et al. 2024.
- `cubic_sparsity`, `mean_sparsity`, `average_params`, `initial_params_for_average` (`sparsity`): gradual pruning
  (Zhu & Gupta 2017) and the average non-zero parameter count of Jin et al. 2025.
- `training_compute`, `transformer_training_flops` (`flops`): C = 6 N D, plus attention when the shape is given.
"""

from lightning_scaling.schedules.flops import (
    FLOPS_PER_PARAM_TOKEN,
    attention_forward_flops_per_token,
    training_compute,
    transformer_training_flops,
)
from lightning_scaling.schedules.lr import (
    DECAY_SHAPES,
    POWER_CONSTRAINTS,
    PowerSchedule,
    check_warmup_before_decay,
    decay_factor,
    power_lr,
    validate_power_args,
)
from lightning_scaling.schedules.sparsity import (
    END_FRACTION,
    PRUNING_CONSTRAINTS,
    START_FRACTION,
    average_params,
    check_start_before_end,
    cubic_sparsity,
    initial_params_for_average,
    mean_sparsity,
    validate_pruning_args,
)

__all__ = [
    "DECAY_SHAPES",
    "END_FRACTION",
    "FLOPS_PER_PARAM_TOKEN",
    "POWER_CONSTRAINTS",
    "PRUNING_CONSTRAINTS",
    "START_FRACTION",
    "PowerSchedule",
    "attention_forward_flops_per_token",
    "average_params",
    "check_start_before_end",
    "check_warmup_before_decay",
    "cubic_sparsity",
    "decay_factor",
    "initial_params_for_average",
    "mean_sparsity",
    "power_lr",
    "training_compute",
    "transformer_training_flops",
    "validate_power_args",
    "validate_pruning_args",
]
