"""Lightning callbacks: thin wiring over the core.

- `ScalingTracker`: tokens, FLOPs, parameter counts and N_avg, logged to the trainer's loggers.
- `PowerLR`: the Power learning-rate schedule (Shen et al. 2024), per-group multipliers kept.
- `GradualPruning`: gradual magnitude pruning during pre-training (Jin et al. 2025).
- `ScalingLawAdvisor`: the closing hook: refit the law over every MLflow run and recommend the next run.
- `LossForecast`: the final loss forecast at each validation (annealing law over the store's curves); stops a
  hopeless run on request.
- `MuP`: muP (Yang et al. 2022) on Microsoft's `mup` package: base shapes, MuReadout, muP optimizer groups.
"""

from lightning_scaling.callbacks.advisor import ScalingLawAdvisor
from lightning_scaling.callbacks.loss_forecast import LossForecast, LossForecastWarning
from lightning_scaling.callbacks.mup import MuP
from lightning_scaling.callbacks.power_lr import PowerLR
from lightning_scaling.callbacks.pruning import GradualPruning
from lightning_scaling.callbacks.tracker import ScalingTracker

__all__ = [
    "GradualPruning",
    "LossForecast",
    "LossForecastWarning",
    "MuP",
    "PowerLR",
    "ScalingLawAdvisor",
    "ScalingTracker",
]
