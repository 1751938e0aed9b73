"""Run data (numpy only): validation of N, D and losses, run records and which of them a fit may use, CSV run
tables, and the runs to add when there are too few.

- `RunRecord`, `Selection`, `select_runs` (`records`): a run as the store reads it, and the runs a fit may use.
- `RunTable`, `read_runs_csv`, `read_points_csv` (`table`), `read_curves_csv` (`curve_table`): runs from CSV files.
- `validate_runs`, `check_enough_runs`, `suggest_runs`, `check_plausible` (`validation`): errors that name the row.
- `redact`, `has_password`, `keep_uri_out_of_output` (`secrets`): credentials kept out of output.
- the schema (`schema`): the metric, parameter and tag names `ScalingTracker` writes and the run store reads.
"""

from lightning_scaling.runs.curve_table import read_curves_csv
from lightning_scaling.runs.records import (
    DIVERGENCE_RATIO,
    STALE_AFTER_S,
    RunRecord,
    Selection,
    select_runs,
)
from lightning_scaling.runs.schema import (
    BEST_TAG,
    COMPLETE_TAG,
    DATA_UNIT,
    FLOPS,
    FLOPS_ANALYTIC,
    LR,
    METRIC_KEYS,
    N_RUNS_TAG,
    PARAM_KEYS,
    PARAMS_AVG,
    PARAMS_BASIS,
    PARAMS_NONZERO,
    PARAMS_PREFIX,
    POWER_DECAY_FRACTION,
    PROCESS_TAG,
    RESUMED_FROM_TAG,
    SCHEMA_TAG,
    SCHEMA_VERSION,
    SPARSITY,
    STOPPED_EARLY_TAG,
    SUMMARY_TAG,
    SWEEP_ATTEMPTS_TAG,
    SWEEP_LEFT_OUT_TAG,
    SWEEP_LOG_TAG,
    SWEEP_PLAN_TAG,
    SWEEP_STAGE_TAG,
    TOKENS,
    params_count_key,
)
from lightning_scaling.runs.secrets import has_password, keep_uri_out_of_output, redact
from lightning_scaling.runs.table import RunTable, read_points_csv, read_runs_csv
from lightning_scaling.runs.validation import (
    MIN_DISTINCT,
    MIN_RUNS,
    PLAUSIBLE,
    check_enough_runs,
    check_plausible,
    distinct,
    suggest_runs,
    validate_runs,
)

__all__ = [
    "BEST_TAG",
    "COMPLETE_TAG",
    "DATA_UNIT",
    "DIVERGENCE_RATIO",
    "FLOPS",
    "FLOPS_ANALYTIC",
    "LR",
    "METRIC_KEYS",
    "MIN_DISTINCT",
    "MIN_RUNS",
    "N_RUNS_TAG",
    "PARAMS_AVG",
    "PARAMS_BASIS",
    "PARAMS_NONZERO",
    "PARAMS_PREFIX",
    "PARAM_KEYS",
    "PLAUSIBLE",
    "POWER_DECAY_FRACTION",
    "PROCESS_TAG",
    "RESUMED_FROM_TAG",
    "SCHEMA_TAG",
    "SCHEMA_VERSION",
    "SPARSITY",
    "STALE_AFTER_S",
    "STOPPED_EARLY_TAG",
    "SUMMARY_TAG",
    "SWEEP_ATTEMPTS_TAG",
    "SWEEP_LEFT_OUT_TAG",
    "SWEEP_LOG_TAG",
    "SWEEP_PLAN_TAG",
    "SWEEP_STAGE_TAG",
    "TOKENS",
    "RunRecord",
    "RunTable",
    "Selection",
    "check_enough_runs",
    "check_plausible",
    "distinct",
    "has_password",
    "keep_uri_out_of_output",
    "params_count_key",
    "read_curves_csv",
    "read_points_csv",
    "read_runs_csv",
    "redact",
    "select_runs",
    "suggest_runs",
    "validate_runs",
]
