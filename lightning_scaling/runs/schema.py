"""The run schema: the names `ScalingTracker` writes and the run store reads, defined once.

A run logged with `ScalingTracker` carries these metrics (step = the global step), parameters and tags. The
closing hook reads exactly them; bump `SCHEMA_VERSION` when their meaning changes.
"""

from __future__ import annotations

SCHEMA_VERSION = "1"

# metrics
TOKENS = "scaling/tokens"  # D: data seen (tokens, or samples)
FLOPS = "scaling/flops"  # C: measured training FLOPs
FLOPS_ANALYTIC = "scaling/flops_analytic"  # 6 N D plus attention
PARAMS_NONZERO = "scaling/params_nonzero"
PARAMS_AVG = "scaling/params_avg"  # N_avg (Jin et al. 2025)
SPARSITY = "scaling/sparsity"
LR = "scaling/lr"  # PowerLR's base learning rate
METRIC_KEYS = (TOKENS, FLOPS, FLOPS_ANALYTIC, PARAMS_NONZERO, PARAMS_AVG, SPARSITY)

# parameters
PARAMS_PREFIX = "scaling/"
PARAMS_BASIS = "scaling/params_basis"  # which count N is: "non_embedding" or "total"
DATA_UNIT = "scaling/data_unit"  # "tokens" or "samples"
POWER_DECAY_FRACTION = "scaling/power_decay_fraction"  # PowerLR's decay phase, a fraction of the run's tokens


def params_count_key(basis: str) -> str:
    """The parameter holding the dense count of a basis: scaling/params_total, _embedding or _non_embedding."""
    return f"scaling/params_{basis}"


PARAM_KEYS = (params_count_key("total"), params_count_key("embedding"), params_count_key("non_embedding"),
              PARAMS_BASIS, DATA_UNIT)

# tags
SCHEMA_TAG = "lightning_scaling.schema"  # SCHEMA_VERSION (a parameter for loggers without tags)
RESUMED_FROM_TAG = "lightning_scaling.resumed_from"  # the run whose checkpoint this run continued
SUMMARY_TAG = "lightning_scaling.summary"  # "true" on the experiment's summary run (written by the closing hook)
COMPLETE_TAG = "lightning_scaling.complete"  # "true" once training ended normally (before MLflow marks it FINISHED)
BEST_TAG = "lightning_scaling.best"  # JSON {metric: lowest value seen at a validation} for the run's loss metrics
STOPPED_EARLY_TAG = "lightning_scaling.stopped_early"  # why `LossForecast` stopped the run (hopeless)
N_RUNS_TAG = "lightning_scaling.n_runs"  # on the summary run: how many runs its recommendation was fitted on
# a sweep's state (`lightning-scaling sweep`), kept on each of its runs so that a sweep survives its own process
SWEEP_STAGE_TAG = "lightning_scaling.sweep.stage"  # the stage that planned the run (1, 2, ...)
SWEEP_PLAN_TAG = "lightning_scaling.sweep.plan"  # JSON: the planned run (name, params, tokens, flops, steps, ...)
SWEEP_ATTEMPTS_TAG = "lightning_scaling.sweep.attempts"  # how many times it was started (a resume or retry counts)
SWEEP_LEFT_OUT_TAG = "lightning_scaling.sweep.left_out"  # why the sweep gave up on it (failed twice)
SWEEP_LOG_TAG = "lightning_scaling.sweep.log"  # the artifact path of its training log, once attached
PROCESS_TAG = "lightning_scaling.process"  # "host:pid" of the process training the run (`lightning-scaling train`)
