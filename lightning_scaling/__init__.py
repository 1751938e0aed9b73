"""lightning-scaling: scaling-law practice for PyTorch Lightning trainers.

The top-level package is the pure core (numpy and scipy only): the law, its fitter, compute allocation,
bootstrap intervals, isoFLOP analysis and run validation. Lightning callbacks live in
`lightning_scaling.callbacks`, MLflow and LightningCLI adapters in `lightning_scaling.integrations`.
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
