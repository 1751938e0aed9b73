"""What to run next (numpy only): from the runs logged so far to a decision, one entry point per question, each
taking `Runs` (a CSV table, `read_runs`, or the store's `Selection`, `Runs.from_selection`) and option groups:

- `advise(runs, FitOptions, NextRunOptions, forms=...) -> Advice`: the next run sized by the law form chosen by
  backtest, with calibrated intervals, the backtest and the data used, or the refusal (too few runs, a degenerate
  fit) with the runs to add;
- `predict(runs, points_N, points_D, FitOptions, forms) -> list[Prediction]`: the loss with its interval at sizes
  not trained yet;
- `backtest_law(runs, FitOptions, forms) -> dict`: how well the law would have predicted the runs so far;
- `plan_sweep(runs, StageOptions, Family) -> StagePlan`: the next stage of a sweep (a c-optimal design by rollout,
  the family's architectures, learning-rate and batch-size priors).

Each answer is a frozen dataclass with `to_dict()` (the JSON); `planner.report` renders them in words.
"""

from lightning_scaling.planner.family import VALIDATIONS, validation_interval
from lightning_scaling.planner.inputs import Runs, read_runs
from lightning_scaling.planner.next_run import advise, plan_next_run
from lightning_scaling.planner.options import FitOptions, NextRunOptions, StageOptions
from lightning_scaling.planner.predict import backtest_law, predict
from lightning_scaling.planner.report import (
    advice_text,
    backtest_text,
    experiment_markdown,
    format_text,
    plan_line,
    plan_text,
    predictions_text,
    recommendation_markdown,
    recommendation_sentence,
    refit_metrics,
    stage_sentence,
)
from lightning_scaling.planner.results import (
    Advice,
    DataUsed,
    LawSummary,
    NextRun,
    Prediction,
    SparseNext,
    StagePlan,
)
from lightning_scaling.planner.stages import plan_stage, stage_plan
from lightning_scaling.planner.sweep import Family, plan_sweep
from lightning_scaling.planner.wording import format_count

__all__ = [
    "VALIDATIONS",
    "validation_interval",
    "Advice",
    "DataUsed",
    "Family",
    "FitOptions",
    "LawSummary",
    "NextRun",
    "NextRunOptions",
    "Prediction",
    "Runs",
    "SparseNext",
    "StageOptions",
    "StagePlan",
    "advice_text",
    "advise",
    "backtest_law",
    "backtest_text",
    "experiment_markdown",
    "format_count",
    "format_text",
    "plan_line",
    "plan_next_run",
    "plan_stage",
    "plan_text",
    "plan_sweep",
    "predict",
    "predictions_text",
    "read_runs",
    "recommendation_markdown",
    "recommendation_sentence",
    "refit_metrics",
    "stage_plan",
    "stage_sentence",
]
