"""The whole-curve law (numpy and scipy only): the loss along a run as a function of the learning rates it has seen.

- `annealing`: the learning-rate annealing law of one curve (Tissue et al. 2024) and its schedule areas;
- `shared_fit`: a run's curves (`Curve`) and the law fitted across runs (shared shape, per-run coefficients);
- `forecast`: the forecast of a run's rest from its first part and the other runs, with its interval;
- `stacking`: the final-loss law across the other runs stacked with a run's own curve forecast;
- `correction`: every validation point of a run corrected for its schedule, as points of the final-loss law.
"""

from lightning_scaling.curves.annealing import AnnealingLaw, schedule_areas
from lightning_scaling.curves.correction import CheckpointPoints, schedule_corrected
from lightning_scaling.curves.forecast import Forecast, Forecaster, forecast
from lightning_scaling.curves.shared_fit import Curve, SharedCurveFit, fit_curve, fit_shared
from lightning_scaling.curves.stacking import FinalLaw, Stack, final_law, stack

__all__ = [
    "AnnealingLaw",
    "CheckpointPoints",
    "Curve",
    "FinalLaw",
    "Forecast",
    "Forecaster",
    "SharedCurveFit",
    "Stack",
    "final_law",
    "fit_curve",
    "fit_shared",
    "forecast",
    "schedule_areas",
    "schedule_corrected",
    "stack",
]
