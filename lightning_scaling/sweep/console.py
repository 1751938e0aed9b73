"""What a sweep prints: one line per finished run and a progress line for the stage and the budget.

Each run's own output (Lightning's banner, model summary, warnings, progress bar) goes to its log file, attached to
its MLflow run; the console keeps to the sweep.
"""

from __future__ import annotations

import math

from lightning_scaling.runs.schema import FLOPS, PARAMS_AVG, SPARSITY, TOKENS

__all__ = ["bar", "progress_line", "run_line"]

BAR_WIDTH = 24


def _g(x, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def run_line(run, seconds: float, loss_key: str = "val_loss", outcome: str = "finished") -> str:
    """``finished s2-C1e+11-N3.4e+04  N=3.37e+04  D=5.9e+05  C=1.2e+11  val_loss=2.1234  41 s  stage 2``."""
    m = run.metrics
    loss = m.get(loss_key)
    sparsity = m.get(SPARSITY) or 0.0
    return (f"  {outcome:<9} {run.name:<28} N={_g(m.get(PARAMS_AVG)):>8}  D={_g(m.get(TOKENS)):>8}  "
            f"C={_g(m.get(FLOPS)):>8}  {loss_key}={_g(loss, 5):>7}  {seconds:5.0f} s  stage {run.stage}"
            + (f"  sparsity {sparsity:.2f}" if sparsity else ""))


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """``[#########---------------]`` for `fraction` in [0, 1]."""
    filled = int(round(min(max(fraction, 0.0), 1.0) * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def progress_line(stage: int, done: int, total: int, spent: float, budget: float) -> str:
    """The stage's runs done and the budget spent, each with a bar."""
    return (f"  stage {stage}: {done}/{total} runs {bar(done / total if total else 1.0, 10)}   budget: "
            f"{spent:.3g} of {budget:.3g} FLOPs {bar(spent / budget if budget else 1.0)} "
            f"{100 * spent / budget if budget else 100:.0f}%")
