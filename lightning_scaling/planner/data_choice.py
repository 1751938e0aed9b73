"""Which data the law is fitted on: the runs' final losses, or those and the schedule-corrected checkpoints of their
loss curves (`curves.correction`). With ``use_curves="auto"`` the checkpoints join the fit when the forward-chaining
backtest (`evaluation.backtest`) predicts the held-out runs' final losses better with them than from final losses
alone; "always" and "never" decide without asking. A pruned run's N_avg moves along it, so only dense runs' curves
count; a checkpoint counts only inside the range of sizes and tokens the final losses anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lightning_scaling.curves.correction import schedule_corrected
from lightning_scaling.evaluation.backtest import backtest
from lightning_scaling.planner.inputs import Runs
from lightning_scaling.runs.schema import POWER_DECAY_FRACTION


@dataclass(frozen=True)
class DataChoice:
    """The checkpoints found (or None), whether the fit uses them (`whole`), why not, and the two backtests."""

    points: object | None
    whole: bool
    why_not: str | None
    final_backtest: dict | None = None
    curve_backtest: dict | None = None


def checkpoints(runs: Runs, use_curves: str):
    """The schedule-corrected checkpoints of the dense runs' curves, or (None, why not); with sparse runs in the
    fit N is N_avg, which for a dense run is its dense count all along."""
    if use_curves == "never":
        return None, "use_curves='never'"
    if not runs.curves:
        return None, "no loss curves logged (validation at several steps of each run gives them)"
    dense = {r.run_id for r in runs.records if not r.sparse}  # a pruned run's N_avg moves along it: final loss only
    curves = [c for c in runs.curves if c.run in dense]
    if not curves:
        return None, "only sparse runs have loss curves (N_avg changes along a pruned run)"
    fractions = {}
    for r in runs.records:
        f = _float_or_none(r.config.get(POWER_DECAY_FRACTION))
        if f is not None:
            fractions[r.run_id] = f
    points = schedule_corrected(curves, [r.run_id for r in runs.records], runs.N, runs.D, fractions)
    if not len(points):
        return None, "no run has a validation point between a quarter of the run and its end"
    points = points.within(runs.N, runs.D)
    if not len(points):
        return None, ("no checkpoint lies where the final losses anchor the law (inside their range of sizes and "
                      "tokens): run a size at two budgets or more")
    return points, None


def choose_data(runs: Runs, factory, use_curves: str, confidence: float) -> DataChoice:
    """Final losses only, or with the checkpoints (module docstring)."""
    points, why_not = checkpoints(runs, use_curves)
    if points is None:
        return DataChoice(None, False, why_not)
    N, D, L = runs.N, runs.D, runs.L
    final_bt = backtest(factory, N, D, L, confidence=confidence, budgets=runs.budgets)
    curve_bt = backtest(factory, N, D, L, confidence=confidence, checkpoints=points, budgets=runs.budgets)
    a, b = final_bt["mape"], curve_bt["mape"]
    if use_curves == "always":
        why_not = None
    elif a is None or b is None:
        why_not = "too few runs to compare final-only and whole-curve fits by forward chaining"
    elif b >= a:
        why_not = f"the whole-curve fit's backtest MAPE {b:.2f}% is not below the final-only fit's {a:.2f}%"
    return DataChoice(points, why_not is None, why_not, final_bt, curve_bt)


def _float_or_none(x):
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None
