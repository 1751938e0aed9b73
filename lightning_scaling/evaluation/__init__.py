"""How well the final-loss law predicts runs it has not seen (numpy and scipy only).

- `folds`: the one fold scheme (forward chaining over compute: prefixes of the runs ordered by compute, or isoFLOP
  budgets), the split-conformal quantile, and the hull in which a fold's checkpoints count;
- `backtest`: the backtest of a law form on those folds, and the choice between law forms;
- `intervals`: prediction intervals calibrated on held-out runs of the same scheme.
"""

from lightning_scaling.evaluation.backtest import (
    Backtest,
    FoldScore,
    FormChoice,
    applicable_forms,
    backtest,
    choose_form,
)
from lightning_scaling.evaluation.folds import Fold, conformal_quantile, forward_folds, inside_hull, prefix_folds
from lightning_scaling.evaluation.intervals import (
    MIN_HELD_OUT,
    ExtrapolationIntervals,
    calibrate,
    scatter,
    widen_by_scatter,
)

__all__ = [
    "MIN_HELD_OUT",
    "Backtest",
    "ExtrapolationIntervals",
    "Fold",
    "FoldScore",
    "FormChoice",
    "applicable_forms",
    "backtest",
    "calibrate",
    "choose_form",
    "conformal_quantile",
    "forward_folds",
    "inside_hull",
    "prefix_folds",
    "scatter",
    "widen_by_scatter",
]
