"""The commands on the final-loss law: `fit`, `recommend`, `runs`, `backtest` and `predict`.

Each `run_*` reads its runs (RUNS.csv, or the MLflow experiment through `cli.sources`) and asks the planner one
question in one call, so that the call is the one line to change when the planner's entry points change.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from lightning_scaling import plugins
from lightning_scaling.cli import sources
from lightning_scaling.cli.command import Command
from lightning_scaling.cli.options import (
    CONFIDENCE_BRIEF,
    EPILOG,
    FORMAT,
    INTERVALS,
    LAW,
    RUNS,
    SEED,
    TRACKING,
    Exclusive,
    argument,
    positive_float,
)
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.law.fit import ChinchillaFit
from lightning_scaling.planner.next_run import DEFAULT_GROWTH, plan_next_run
from lightning_scaling.planner.predict import backtest_runs, backtest_text, predict_points
from lightning_scaling.planner.recommendation import format_text, recommend, recommendation_markdown, summarize_fit
from lightning_scaling.runs.table import read_points_csv, read_runs_csv


# -- fit and recommend RUNS.csv -----------------------------------------------------------------------------------
def fit_with_intervals(table, args):
    """The law fitted to the runs of `table`, and its bootstrap intervals (None without `--bootstrap`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary messages are reported in the output instead
        fit = ChinchillaFit().fit(table.N, table.D, table.loss, params_column=table.params_column,
                                  labels=table.labels)
    boot = fit.bootstrap(args.bootstrap, seed=args.seed, confidence=args.confidence) if args.bootstrap else None
    return fit, boot


def run_fit(args) -> dict:
    table = read_runs_csv(args.runs)
    fit, boot = fit_with_intervals(table, args)
    return summarize_fit(fit, boot, table.flops)


@dataclass(frozen=True)
class StoreRecommendation:
    """`recommend` from an MLflow experiment: the closing hook's recommendation, shown as its Markdown summary."""

    recommendation: dict

    def to_dict(self) -> dict:
        return self.recommendation


def run_recommend(args) -> dict | StoreRecommendation:
    """From RUNS.csv (`--flops` needed), or from the MLflow experiment as the closing hook does."""
    if args.runs is None:
        return StoreRecommendation(_recommend_from_store(args))
    if args.flops is None:
        raise ConfigurationError("`recommend RUNS.csv` needs --flops C (the next run's compute budget)")
    table = read_runs_csv(args.runs)
    fit, boot = fit_with_intervals(table, args)
    return recommend(fit, args.flops, boot, table.flops)


def _recommend_from_store(args) -> dict:
    store = sources.store(args)
    rec = plan_next_run(store.select(), next_flops=args.flops, growth=args.growth or DEFAULT_GROWTH,
                        n_bootstrap=args.bootstrap, seed=args.seed, confidence=args.confidence,
                        propose_architecture=plugins.propose_architecture, law_forms=plugins.law_forms())
    if args.publish:
        store.publish_everywhere(rec, force=True)
    return rec


def _recommend_text(result) -> str:
    if isinstance(result, StoreRecommendation):
        return recommendation_markdown(result.recommendation)
    return format_text(result)


# -- runs ---------------------------------------------------------------------------------------------------------
def run_runs(args) -> dict:
    return sources.store(args).select().to_dict()


def _runs_text(out: dict) -> str:
    lines = [f"{len(out['used'])} runs used:"]
    lines += [f"  {r['run_name'] or r['run_id']:<24} N={r['params']:.4g} D={r['tokens']:.4g} C={r['flops']:.4g} "
              f"loss={r['loss']:.4f}" + (f" sparsity={r['sparsity']:.2f}" if r["sparsity"] else "")
              for r in out["used"]]
    lines.append(f"{len(out['excluded'])} runs excluded:")
    lines += [f"  {r['run_name'] or r['run_id']:<24} {r['reason']}" for r in out["excluded"]]
    return "\n".join(lines)


# -- backtest and predict -----------------------------------------------------------------------------------------
def run_backtest(args) -> dict:
    N, D, L, extra, _ = sources.law_runs(args)
    return backtest_runs(N, D, L, forms=plugins.law_forms(), law=args.law, confidence=args.confidence, extra=extra)


def run_predict(args) -> list:
    N, D, L, extra, column = sources.law_runs(args)
    points = read_points_csv(args.at)
    return predict_points(N, D, L, *points, forms=plugins.law_forms(), law=args.law, confidence=args.confidence,
                          extra=extra, params_column=column, seed=args.seed)


def _predict_text(rows: list) -> str:
    pct = int(round(100 * rows[0]["confidence"]))
    lines = [f"law: {rows[0]['law']}; {pct}% prediction intervals ({rows[0]['interval']})",
             f"  {'params':>12} {'tokens':>12} {'loss':>8}   {pct}% interval"]
    lines += [f"  {r['params']:>12.4g} {r['tokens']:>12.4g} {r['loss']:>8.4f}   "
              f"[{r['loss_low']:.4f}, {r['loss_high']:.4f}]" for r in rows]
    return "\n".join(lines)


# -- the commands -------------------------------------------------------------------------------------------------
FIT = Command(
    "fit", "fit the law to runs in a CSV", (RUNS, FORMAT, *INTERVALS), run_fit, format_text, epilog=EPILOG)

RECOMMEND = Command(
    "recommend", "compute-optimal next run: from a CSV, or from an MLflow experiment as the closing hook does",
    (RUNS.but(nargs="?"), FORMAT, *INTERVALS, TRACKING,
     Exclusive((argument("--flops", type=positive_float, metavar="C",
                         help="compute budget of the next run in FLOPs (C = 6 N D)"),
                argument("--growth", type=positive_float, metavar="G",
                         help="budget = G x the largest compute logged, as 6ND (MLflow form only; default 4)"))),
     argument("--publish", action="store_true",
              help="also write the recommendation to the experiment's summary run `scaling-law`")),
    run_recommend, _recommend_text, epilog=EPILOG)

RUNS_COMMAND = Command(
    "runs", "the run records the closing hook would use, and the excluded runs with reasons", (TRACKING, FORMAT),
    run_runs, _runs_text)

BACKTEST = Command(
    "backtest", "forward-chaining backtest: per fold, the MAPE of the runs above the compute fitted, interval "
    "coverage, and N_opt against the isoFLOP parabola",
    (RUNS.but(nargs="?", help="runs to backtest (or --tracking-uri/--experiment)"), TRACKING, LAW, CONFIDENCE_BRIEF,
     FORMAT),
    run_backtest, backtest_text, epilog=EPILOG)

PREDICT = Command(
    "predict", "the loss with its prediction interval at each (params, tokens) of POINTS.csv",
    (RUNS, argument("--at", required=True, metavar="POINTS.csv", help="CSV with columns params, tokens"), LAW,
     CONFIDENCE_BRIEF, SEED.but(help="seed of the fallback bootstrap (default 0)"), FORMAT),
    run_predict, _predict_text, epilog=EPILOG)
