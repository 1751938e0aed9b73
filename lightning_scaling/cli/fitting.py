"""The commands on the final-loss law: `fit`, `recommend`, `runs`, `backtest` and `predict`.

Each `run_*` reads its runs (`cli.sources`: RUNS.csv, or the MLflow experiment as the closing hook reads it) and asks
the planner one question in one call (`planner.advise`, `backtest_law`, `predict`), so that a CSV and the store get
one answer from the same runs: `recommend RUNS.csv` chooses the law form by backtest, gives calibrated intervals,
the backtest and the refusal of a degenerate fit exactly as the closing hook does.
"""

from __future__ import annotations

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
from lightning_scaling.errors import ConfigurationError, InsufficientRunsError
from lightning_scaling.law import ChinchillaFit
from lightning_scaling.planner import (
    Advice,
    FitOptions,
    NextRunOptions,
    Runs,
    advice_text,
    advise,
    backtest_law,
    backtest_text,
    format_text,
    predict,
    predictions_text,
    recommendation_markdown,
)
from lightning_scaling.planner.recommendation import summarize_fit
from lightning_scaling.runs import read_points_csv, read_runs_csv


# -- fit ----------------------------------------------------------------------------------------------------------
def run_fit(args) -> dict:
    """Chinchilla's law fitted to RUNS.csv, with bootstrap intervals under `--bootstrap`."""
    table = read_runs_csv(args.runs)
    fit = ChinchillaFit(warn=False).fit(table.N, table.D, table.loss, params_column=table.params_column,
                                        labels=table.labels)  # its boundary messages are in the output
    boot = fit.bootstrap(args.bootstrap, seed=args.seed, confidence=args.confidence) if args.bootstrap else None
    return summarize_fit(fit, boot, table.flops)


# -- recommend ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreAdvice:
    """`recommend` from an MLflow experiment: the closing hook's answer, shown as its Markdown note."""

    advice: Advice
    published: bool = False

    def to_dict(self) -> dict:
        return self.advice.to_dict()


def advise_runs(runs: Runs, args) -> Advice:
    """The closing hook's answer for `runs` under the command line's options: the law form `--law` names or the
    backtest chooses, the runs' checkpoints when they predict better (`use_curves="auto"`), intervals calibrated by
    forward chaining, and the budget `--flops` or `--growth` x the largest compute logged (the planner's default)."""
    fit_options = FitOptions(n_bootstrap=args.bootstrap, seed=args.seed, confidence=args.confidence, law=args.law,
                             use_curves="auto")
    run_options = NextRunOptions(next_flops=args.flops, growth=args.growth or NextRunOptions.growth)
    return advise(runs, fit_options, run_options, forms=plugins.law_forms(),
                  propose_architecture=plugins.propose_architecture)


def run_recommend(args) -> Advice | StoreAdvice:
    """From RUNS.csv (`--flops` needed; too few runs exit with the runs to add), or from the MLflow experiment as the
    closing hook reads it (its runs' curves too), `--publish` writing the answer where the hook writes it."""
    if args.runs is None:
        runs_store = sources.store(args)
        advice = advise_runs(sources.store_runs(runs_store, curves=True), args)
        if args.publish:
            runs_store.publish_everywhere(advice.to_dict(), force=True)
        return StoreAdvice(advice, published=args.publish)
    if args.flops is None:
        raise ConfigurationError("`recommend RUNS.csv` needs --flops C (the next run's compute budget)")
    advice = advise_runs(sources.runs(args), args)
    if advice.status == "insufficient_runs":
        raise InsufficientRunsError(advice.message, advice.suggestions)
    return advice


NOT_PUBLISHED = ("Nothing was written to the store: `--format json` prints the whole recommendation here, and "
                 "`--publish` writes it to the summary run (`scaling_law/recommendation.json`) as the closing hook "
                 "does.")


def _recommend_text(result) -> str:
    if isinstance(result, StoreAdvice):
        if result.published:  # on the summary run, with its artifact
            return recommendation_markdown(result.advice)
        return recommendation_markdown(result.advice, details=NOT_PUBLISHED)
    return advice_text(result)


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
    return backtest_law(sources.runs(args), FitOptions(law=args.law, confidence=args.confidence), plugins.law_forms())


def run_predict(args) -> list:
    runs = sources.runs(args)
    pN, pD, points_extra = read_points_csv(args.at)
    return predict(runs, pN, pD, FitOptions(law=args.law, confidence=args.confidence, seed=args.seed),
                   plugins.law_forms(), points_extra)


# -- the commands -------------------------------------------------------------------------------------------------
FIT = Command(
    "fit", "fit the law to runs in a CSV", (RUNS, FORMAT, *INTERVALS), run_fit, format_text, epilog=EPILOG)

RECOMMEND = Command(
    "recommend", "compute-optimal next run: from a CSV, or from an MLflow experiment as the closing hook does",
    (RUNS.but(nargs="?"), FORMAT, *INTERVALS, LAW, TRACKING,
     Exclusive((argument("--flops", type=positive_float, metavar="C",
                         help="compute budget of the next run in FLOPs (C = 6 N D)"),
                argument("--growth", type=positive_float, metavar="G",
                         help="budget = G x the largest compute logged, as 6ND (MLflow form only; default "
                              f"{NextRunOptions.growth:g})"))),
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
    run_predict, predictions_text, epilog=EPILOG)
