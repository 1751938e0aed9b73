"""lightning-scaling: scaling-law practice for PyTorch Lightning trainers.

The top level re-exports the fitter most users start from (`ChinchillaFit`, `ChinchillaLaw`, `FitWarning`) and the
error types. One room per concept, each exporting its public names in its `__init__`: `law` (the final-loss law and
its fitters), `evaluation` (backtests and calibrated intervals), `curves` (the whole-curve law and forecasts),
`planner` (what to run next), `runs`, `schedules`, `nn` (tensor code), `plugins`, `integrations` (MLflow, LightningCLI,
the Lightning namespaces), `callbacks` and `cli`; the README's Layout gives the import layers.
"""

from lightning_scaling.errors import (
    ConfigurationError,
    InsufficientRunsError,
    LightningScalingError,
    NotFittedError,
    ScalingDataError,
)
from lightning_scaling.law.chinchilla import ChinchillaLaw
from lightning_scaling.law.fit import ChinchillaFit, FitWarning

__version__ = "0.1.0"

__all__ = [
    "ChinchillaFit",
    "ChinchillaLaw",
    "ConfigurationError",
    "FitWarning",
    "InsufficientRunsError",
    "LightningScalingError",
    "NotFittedError",
    "ScalingDataError",
]
