"""lightning-scaling: scaling-law practice for PyTorch Lightning trainers.

The top-level package is the pure core (numpy and scipy only): the law, its fitter, compute allocation,
bootstrap intervals, isoFLOP analysis and run validation. Lightning callbacks live in
`lightning_scaling.callbacks`, MLflow and LightningCLI adapters in `lightning_scaling.integrations`.
"""

from .errors import (
    ConfigurationError,
    InsufficientRunsError,
    LightningScalingError,
    NotFittedError,
    ScalingDataError,
)
from .law.fit import ChinchillaFit, FitWarning
from .law.chinchilla import ChinchillaLaw

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
