"""The scaling law (numpy and scipy only): its forms, the fitting objective and global search, the fitters,
bootstrap intervals, compute allocation, the isoFLOP cross-check, and runs generated from a known law.

- `ChinchillaLaw`, `ChinchillaFit` (`chinchilla`, `fit`): L(N, D) = E + A / N^alpha + B / D^beta and its fitter
  (Hoffmann et al. 2022, Approach 3); `FitWarning` for a parameter on its search bound.
- `SeparableLawFit`, `ExponentInteractionFit`, `DataConstrainedFit` (`separable`): the other law forms.
- `LawForm`, `fit_runs`, `predict_runs`, `quietly`, `check_law_form` (`form`): the interface every form implements.
- `compute_optimal`, `compute_for_loss`, `params_for_tokens`, `tokens_for_params`, `Allocation` (`allocation`).
- `isoflop_analysis` (`isoflop`): Approach 2, the cross-check; `BootstrapResult` (`bootstrap`): the intervals.
- `CHINCHILLA_PAPER_LAW`, `synthetic_runs` (`synthetic`): runs generated from a known law.
"""

from lightning_scaling.law.allocation import (
    Allocation,
    compute_for_loss,
    compute_optimal,
    optimal_allocation,
    params_for_tokens,
    tokens_for_params,
)
from lightning_scaling.law.bootstrap import BootstrapResult, percentile_interval
from lightning_scaling.law.chinchilla import PARAM_NAMES, ChinchillaLaw
from lightning_scaling.law.fit import PARAMS_COLUMNS, ChinchillaFit, FitWarning, ParamsColumn
from lightning_scaling.law.form import (
    DEFAULT_CONFIDENCE,
    Intervals,
    LawForm,
    check_law_form,
    extras_for,
    fit_runs,
    predict_runs,
    quietly,
    shared_fits,
)
from lightning_scaling.law.isoflop import IsoFLOPGroup, IsoFLOPResult, group_by_flops, isoflop_analysis, isoflop_groups
from lightning_scaling.law.objective import HUBER_DELTA, huber, huber_objective
from lightning_scaling.law.separable import (
    DataConstrainedFit,
    ExponentInteractionFit,
    SeparableBootstrap,
    SeparableLawFit,
)
from lightning_scaling.law.synthetic import CHINCHILLA_PAPER_LAW, synthetic_runs

# The bootstrap itself is `ChinchillaFit.bootstrap` (and each form's): the function `law.bootstrap.bootstrap` is not
# re-exported here, where its name would hide the module `lightning_scaling.law.bootstrap`.
__all__ = [
    "CHINCHILLA_PAPER_LAW",
    "DEFAULT_CONFIDENCE",
    "HUBER_DELTA",
    "PARAMS_COLUMNS",
    "PARAM_NAMES",
    "Allocation",
    "BootstrapResult",
    "ChinchillaFit",
    "ChinchillaLaw",
    "DataConstrainedFit",
    "ExponentInteractionFit",
    "FitWarning",
    "Intervals",
    "IsoFLOPGroup",
    "IsoFLOPResult",
    "LawForm",
    "ParamsColumn",
    "SeparableBootstrap",
    "SeparableLawFit",
    "check_law_form",
    "compute_for_loss",
    "compute_optimal",
    "extras_for",
    "fit_runs",
    "group_by_flops",
    "huber",
    "huber_objective",
    "isoflop_analysis",
    "isoflop_groups",
    "optimal_allocation",
    "params_for_tokens",
    "percentile_interval",
    "predict_runs",
    "quietly",
    "shared_fits",
    "synthetic_runs",
    "tokens_for_params",
]
