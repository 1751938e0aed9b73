"""The `lightning-scaling` command line: thin wrappers that load runs, fit, and print.

    lightning-scaling fit RUNS.csv [--format json|text] [--bootstrap K] [--seed S] [--confidence P]
    lightning-scaling recommend RUNS.csv --flops C [--format json|text] [--bootstrap K] [--seed S]
    lightning-scaling recommend --tracking-uri URI --experiment NAME [--flops C | --growth G] [--publish]
    lightning-scaling runs --tracking-uri URI --experiment NAME [--format json|text]
    lightning-scaling backtest RUNS.csv | --tracking-uri URI --experiment NAME [--law auto|NAME] [--confidence P]
    lightning-scaling predict RUNS.csv --at POINTS.csv [--law auto|NAME] [--confidence P] [--format json|text]
    lightning-scaling forecast CURVE.csv [--tracking-uri URI --experiment NAME] [--confidence P] [--format json|text]
    lightning-scaling plan [RUNS.csv | --tracking-uri URI --experiment NAME] --target-flops C --budget B
        [--config FAMILY.yaml] [--format json|text]
    lightning-scaling demo [--format json|text]
    lightning-scaling coord-check --config CONFIG.yaml [--out DIR] [--format json|text]
    lightning-scaling train --config CONFIG.yaml [LightningCLI options]   (LightningCLI's `fit`)

Exit status: 0 on success, 2 on bad input (the message names the column, row or option).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np

from lightning_scaling.errors import ConfigurationError, LightningScalingError
from lightning_scaling.options import check_confidence, check_positive, check_resamples
from lightning_scaling.runs.records import STALE_AFTER_S
from lightning_scaling.runs.secrets import redact

EPILOG = ("CSV columns: params, tokens, loss; optional flops, params_avg (used as N when present), run_id, "
          "unique_tokens (lets the data-constrained law form compete).")


def _argument(check):
    """An argparse `type` from a check of `lightning_scaling.options`: its error message, as argparse's."""

    def convert(text: str):
        try:
            return check(text, "value")
        except ConfigurationError as err:
            raise argparse.ArgumentTypeError(str(err).replace("`value` ", "")) from None

    return convert


_positive_float = _argument(check_positive)
_resamples = _argument(check_resamples)
_confidence = _argument(check_confidence)


def _momentum(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-scaling",
        description="Fit the scaling law L(N, D) = E + A/N^alpha + B/D^beta to training runs and recommend "
        "the next run's size.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p, csv="required"):
        if csv:
            p.add_argument("runs", metavar="RUNS.csv", nargs=None if csv == "required" else "?",
                           help="runs to fit. " + EPILOG)
        p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
        p.add_argument("--bootstrap", type=_resamples, default=0, metavar="K",
                       help="bootstrap replicates for percentile intervals (0: none; 1000 is a good choice)")
        p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)")
        p.add_argument("--confidence", type=_confidence, default=0.8,
                       help="central probability of the intervals (default 0.8: 10th to 90th percentile)")

    def tracking(p):
        p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI, e.g. sqlite:///mlflow.db")
        p.add_argument("--experiment", metavar="NAME", help="MLflow experiment name")
        p.add_argument("--loss-key", default="val_loss", help="metric holding each run's final loss (default val_loss)")
        p.add_argument("--stale-after", type=_positive_float, default=STALE_AFTER_S, metavar="S",
                       help=f"a RUNNING run with no new metric for S seconds is left out as stale "
                       f"(default {STALE_AFTER_S:g})")

    common(sub.add_parser("fit", help="fit the law to runs in a CSV", epilog=EPILOG))
    rec = sub.add_parser("recommend", help="compute-optimal next run: from a CSV, or from an MLflow experiment as "
                         "the closing hook does", epilog=EPILOG)
    common(rec, csv="optional")
    tracking(rec)
    budget = rec.add_mutually_exclusive_group()
    budget.add_argument("--flops", type=_positive_float, metavar="C",
                        help="compute budget of the next run in FLOPs (C = 6 N D)")
    budget.add_argument("--growth", type=_positive_float, metavar="G",
                        help="budget = G x the largest compute logged, as 6ND (MLflow form only; default 4)")
    rec.add_argument("--publish", action="store_true",
                     help="also write the recommendation to the experiment's summary run `scaling-law`")
    runs = sub.add_parser("runs", help="the run records the closing hook would use, and the excluded runs with "
                          "reasons")
    tracking(runs)
    runs.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    def law_option(p):
        p.add_argument("--law", default="auto", metavar="auto|NAME",
                       help="law form: 'auto' (default) chooses by forward-chaining error among the registered forms "
                       "(chinchilla, exponent_interaction, data_constrained with unique_tokens, plugins' forms)")

    bt = sub.add_parser("backtest", help="forward-chaining backtest: per fold, the MAPE of the runs above the compute "
                        "fitted, interval coverage, and N_opt against the isoFLOP parabola", epilog=EPILOG)
    bt.add_argument("runs", metavar="RUNS.csv", nargs="?", help="runs to backtest (or --tracking-uri/--experiment)")
    tracking(bt)
    law_option(bt)
    bt.add_argument("--confidence", type=_confidence, default=0.8, help="central probability of the intervals")
    bt.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    pr = sub.add_parser("predict", help="the loss with its prediction interval at each (params, tokens) of POINTS.csv",
                        epilog=EPILOG)
    pr.add_argument("runs", metavar="RUNS.csv", help="runs to fit. " + EPILOG)
    pr.add_argument("--at", required=True, metavar="POINTS.csv", help="CSV with columns params, tokens")
    law_option(pr)
    pr.add_argument("--confidence", type=_confidence, default=0.8, help="central probability of the intervals")
    pr.add_argument("--seed", type=int, default=0, help="seed of the fallback bootstrap (default 0)")
    pr.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    fc = sub.add_parser("forecast", help="forecast the rest of a run's loss curve (its rows with an empty loss) from "
                        "its first part and the other runs in the file (learning-rate annealing law)",
                        epilog="CSV columns: step, lr, loss; optional tokens, params, run, curve. Rows with an empty "
                        "loss are the planned rest of the run; other runs' rows give the law's shape and calibrate "
                        "the interval; with tokens and params (each run's N) the law across the runs' final losses "
                        "forecasts the run's final loss too, stacked with its curve.")
    fc.add_argument("curve", metavar="CURVE.csv", help="the run's curve so far and its planned steps")
    tracking(fc)
    fc.add_argument("--confidence", type=_confidence, default=0.8, help="central probability of the intervals")
    fc.add_argument("--momentum", type=_momentum, default=None,
                    help="annealing momentum lam in [0, 1) (default: fitted)")
    fc.add_argument("--seed", type=int, default=0, help="seed of the bootstrap used without other runs (default 0)")
    fc.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    pl = sub.add_parser("plan", help="the next stage of small runs (isoFLOP groups) that most shrinks the interval "
                        "on N_opt at the target compute, within a compute budget", epilog=EPILOG)
    pl.add_argument("runs", metavar="RUNS.csv", nargs="?", help="runs so far (or --tracking-uri/--experiment; none: "
                    "plan from the prior)")
    tracking(pl)
    pl.add_argument("--target-flops", type=_positive_float, required=True, metavar="C",
                    help="compute of the run to size in the end (C = 6 N D)")
    pl.add_argument("--budget", type=_positive_float, required=True, metavar="B",
                    help="compute to spend on small runs, all stages together (the runs so far count against it)")
    pl.add_argument("--config", metavar="FAMILY.yaml", help="the LightningCLI config of the model family: each run "
                    "gets an architecture and the command that trains it")
    pl.add_argument("--bootstrap", type=_resamples, default=200, metavar="K",
                    help="bootstrap replicates of the current interval on N_opt (default 200)")
    pl.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    pl.add_argument("--confidence", type=_confidence, default=0.8, help="central probability of the interval")
    pl.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    demo = sub.add_parser("demo", help="fit runs generated from the published Chinchilla law and recommend")
    common(demo, csv=None)
    demo.set_defaults(bootstrap=1000)
    sub.add_parser("train", help="train with LightningCLI from a YAML config (e.g. examples/tiny_gpt/config.yaml); "
                   "every option after `train` goes to LightningCLI's `fit`", add_help=False)
    cc = sub.add_parser("coord-check", help="muP coordinate check: activation size against width per layer")
    cc.add_argument("--config", required=True, metavar="CONFIG.yaml",
                    help="model, data, widths (see examples/tiny_gpt/coord_check.yaml)")
    cc.add_argument("--out", default="coord_check", metavar="DIR", help="folder for plots and JSON (default coord_check)")
    cc.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    return parser


def _fit_table(table):
    from lightning_scaling.law.fit import ChinchillaFit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary messages are reported in the output instead
        return ChinchillaFit().fit(table.N, table.D, table.loss, params_column=table.params_column,
                                   labels=table.labels)


def _store(args):
    from lightning_scaling.errors import ConfigurationError

    if not args.tracking_uri or not args.experiment:
        raise ConfigurationError("give both --tracking-uri and --experiment (or, for `recommend`, a RUNS.csv)")
    from lightning_scaling.integrations.mlflow_store import MLflowRunStore

    return MLflowRunStore(args.tracking_uri, experiment_name=args.experiment, loss_key=args.loss_key,
                          stale_after=args.stale_after)


def run_runs(args) -> dict:
    return _store(args).select().to_dict()


def _runs_text(out: dict) -> str:
    lines = [f"{len(out['used'])} runs used:"]
    lines += [f"  {r['run_name'] or r['run_id']:<24} N={r['params']:.4g} D={r['tokens']:.4g} C={r['flops']:.4g} "
              f"loss={r['loss']:.4f}" + (f" sparsity={r['sparsity']:.2f}" if r["sparsity"] else "")
              for r in out["used"]]
    lines.append(f"{len(out['excluded'])} runs excluded:")
    lines += [f"  {r['run_name'] or r['run_id']:<24} {r['reason']}" for r in out["excluded"]]
    return "\n".join(lines)


def _law_runs(args, peak_lr: bool = False) -> tuple:
    """(N, D, loss, extra, params_column) from RUNS.csv or from the MLflow experiment (as the closing hook reads it);
    with `peak_lr`, each run's peak learning rate too (RUNS.csv's `lr` column, None without it; the store's largest
    `scaling/lr` of each run)."""
    if args.runs is not None:
        from lightning_scaling.runs.table import read_runs_csv

        table = read_runs_csv(args.runs)
        out = (table.N, table.D, table.loss, table.extra, table.params_column)
        return out + (table.lr,) if peak_lr else out
    from lightning_scaling.planner.next_run import law_inputs

    store = _store(args)
    used = store.select().used
    N, D, L, column = law_inputs(used)
    return (N, D, L, None, column) + ((store.peak_learning_rates(used),) if peak_lr else ())


def run_backtest(args) -> dict:
    from lightning_scaling import plugins
    from lightning_scaling.planner.predict import backtest_runs

    N, D, L, extra, _ = _law_runs(args)
    return backtest_runs(N, D, L, forms=plugins.law_forms(), law=args.law, confidence=args.confidence, extra=extra)


def run_predict(args) -> list:
    from lightning_scaling import plugins
    from lightning_scaling.planner.predict import predict_points
    from lightning_scaling.runs.table import read_points_csv

    N, D, L, extra, column = _law_runs(args)
    points = read_points_csv(args.at)
    return predict_points(N, D, L, *points, forms=plugins.law_forms(), law=args.law, confidence=args.confidence,
                          extra=extra, params_column=column, seed=args.seed)


def _predict_text(rows: list) -> str:
    pct = int(round(100 * rows[0]["confidence"]))
    lines = [f"law: {rows[0]['law']}; {pct}% prediction intervals ({rows[0]['interval']})",
             f"  {'params':>12} {'tokens':>12} {'loss':>8}   {pct}% interval"]
    lines += [f"  {r['params']:>12.4g} {r['tokens']:>12.4g} {r['loss']:>8.4f}   [{r['loss_low']:.4f}, {r['loss_high']:.4f}]"
              for r in rows]
    return "\n".join(lines)


def run_recommend_mlflow(args) -> dict:
    from lightning_scaling import plugins
    from lightning_scaling.planner.next_run import DEFAULT_GROWTH, plan_next_run

    store = _store(args)
    rec = plan_next_run(store.select(), next_flops=args.flops, growth=args.growth or DEFAULT_GROWTH,
                        n_bootstrap=args.bootstrap, seed=args.seed, confidence=args.confidence,
                        propose_architecture=plugins.propose_architecture, law_forms=plugins.law_forms())
    if args.publish:
        store.publish_everywhere(rec, force=True)
    return rec


def run_plan(args) -> dict:
    from lightning_scaling import plugins
    from lightning_scaling.planner.stages import family_realizer, plan_stage, with_family

    sweeps = None
    if args.runs is not None or args.tracking_uri or args.experiment:
        N, D, L, _, _, lr = _law_runs(args, peak_lr=True)
        if lr is not None:
            sweeps = (N, D, lr, L)
    else:
        N = D = L = np.zeros(0)
    family, realize, command = None, None, None
    if args.config:
        from lightning_scaling.integrations.family import read_family, train_command

        family = read_family(args.config)
        realize = family_realizer(family["hparams"], plugins.propose_architecture, family["tokens_per_step"])
        command = train_command(family, args.tracking_uri, args.experiment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = plan_stage(args.target_flops, args.budget, N, D, L, n_bootstrap=args.bootstrap, seed=args.seed,
                          confidence=args.confidence, realize=realize)
    plan = with_family(plan, command, family["settings"] if family else None, sweeps)
    if family:
        plan["family"] = {k: family[k] for k in ("config", "model", "tokens_per_step")}
    return plan


def _plan_text(plan: dict) -> str:
    from lightning_scaling.planner.recommendation import format_count

    lines = [plan["sentence"], ""]
    if plan["basis"] == "prior":
        lines.append(f"prior: {plan['prior']['law']} ({plan['prior']['used_for']})")
    else:
        fit = plan["fit"]
        s = f"law now: {fit['law']}; N_opt at the target {format_count(fit['params_opt_at_target'])}"
        if "params_opt_low" in fit:
            s += (f" ({int(round(100 * fit['confidence']))}% interval {format_count(fit['params_opt_low'])}.."
                  f"{format_count(fit['params_opt_high'])})")
        lines.append(s)
    if plan["runs"]:
        lines += ["", f"  {'group':<16} {'params':>10} {'tokens':>10} {'FLOPs':>10}  command"]
        for r in plan["runs"]:
            lines.append(f"  {r['group']:<16} {format_count(r['params']):>10} {format_count(r['tokens']):>10} "
                         f"{r['flops']:>10.3g}  {r.get('command', '')}")
    hp = plan.get("hyperparameters") or {}
    if hp:
        lines += ["", f"learning rate and batch size ({hp['kind']}): {hp['why']}"]
        lines += [f"  learning-rate sweep not used: {why}" for why in hp.get("sweeps_not_used", [])]
    return "\n".join(lines)


def run_fit(args) -> dict:
    from lightning_scaling.planner.recommendation import recommend, summarize_fit
    from lightning_scaling.runs.table import read_runs_csv

    if args.command == "recommend" and args.runs is None:
        return run_recommend_mlflow(args)
    if args.command == "recommend" and args.flops is None:
        from lightning_scaling.errors import ConfigurationError

        raise ConfigurationError("`recommend RUNS.csv` needs --flops C (the next run's compute budget)")
    table = read_runs_csv(args.runs)
    fit = _fit_table(table)
    boot = fit.bootstrap(args.bootstrap, seed=args.seed, confidence=args.confidence) if args.bootstrap else None
    if args.command == "recommend":
        return recommend(fit, args.flops, boot, table.flops)
    return summarize_fit(fit, boot, table.flops)


def run_demo(args) -> dict:
    from lightning_scaling.law.allocation import compute_optimal
    from lightning_scaling.law.fit import ChinchillaFit
    from lightning_scaling.law.synthetic import CHINCHILLA_PAPER_LAW, synthetic_runs
    from lightning_scaling.planner.recommendation import recommend

    law = CHINCHILLA_PAPER_LAW
    budgets = [1e18, 3e18, 1e19, 3e19]
    N, D, L = synthetic_runs(law, budgets, sizes_per_budget=5, noise=0.005, seed=args.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ChinchillaFit().fit(N, D, L)
    boot = fit.bootstrap(args.bootstrap or 1000, seed=args.seed, confidence=args.confidence)
    next_flops = 4 * max(budgets)
    out = recommend(fit, next_flops, boot)
    truth = compute_optimal(law, next_flops)
    out["demo"] = {
        "true_law": law.to_dict(),
        "true_optimum": truth.to_dict(),
        "runs": [{"params": float(n), "tokens": float(d), "loss": float(x)} for n, d, x in zip(N, D, L)],
        "design": f"{len(budgets)} isoFLOP groups at C = {', '.join(f'{c:.0e}' for c in budgets)} FLOPs, "
        "5 sizes each, 0.5% log-normal loss noise",
    }
    return out


def _demo_text(out: dict) -> str:
    from lightning_scaling.planner.recommendation import format_text

    demo = out["demo"]
    truth, true_law = demo["true_optimum"], demo["true_law"]
    lines = [
        "lightning-scaling demo: runs generated from the published Chinchilla law "
        "(Hoffmann et al. 2022, Eq. 10: E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)",
        f"design: {demo['design']} ({len(demo['runs'])} runs)",
        "",
        format_text(out),
        "",
        f"truth at C = {out['flops']:.4g}: N_opt = {truth['params']:.4g}, D_opt = {truth['tokens']:.4g}, "
        f"loss = {truth['loss']:.4f} (true alpha = {true_law['alpha']}, beta = {true_law['beta']})",
    ]
    inside = out["params_low"] <= truth["params"] <= out["params_high"]
    lines.append(f"the true N_opt is {'inside' if inside else 'OUTSIDE'} the {int(100 * out['confidence'])}% interval")
    return "\n".join(lines)


def run_coord_check(args) -> dict:
    """Run the coordinate check of a config file; write a plot and JSON per parametrisation into `--out`."""
    from pathlib import Path

    import yaml

    from lightning_scaling.errors import ConfigurationError
    from lightning_scaling.nn.coord_check import coord_check_from_config

    try:
        config = yaml.safe_load(Path(args.config).read_text())
    except yaml.YAMLError as err:
        raise ConfigurationError(f"{args.config}: not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise ConfigurationError(f"{args.config}: expected a mapping of config keys, got {type(config).__name__}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {}
    for name, result in coord_check_from_config(config).items():
        plot = result.plot(out_dir / f"coord_check_{name}.png")
        data = result.to_dict()
        data["plot"] = str(plot)
        (out_dir / f"coord_check_{name}.json").write_text(json.dumps(data, indent=2))
        report[name] = data
    return report


def _coord_check_text(report: dict) -> str:
    lines = []
    for name, data in report.items():
        slopes = data["slopes"]
        worst = max(slopes, key=lambda k: abs(slopes[k]))
        lines.append(f"{name}: slope of log mean|activation| against log width at step {len(data['sizes'])}, "
                     f"widths {data['widths']} (plot: {data['plot']})")
        lines.extend(f"  {layer:<28} {slope:+.3f}" for layer, slope in slopes.items())
        lines.append(f"  largest |slope|: {worst} {slopes[worst]:+.3f}"
                     + ("  (flat: muP holds)" if abs(slopes[worst]) <= 0.1 else "  (grows with width)"))
    return "\n".join(lines)


def run_forecast(args) -> dict:
    """Forecast the planned rows of CURVE.csv (`curves.forecast`)."""
    from lightning_scaling.curves.forecast import Curve, forecast
    from lightning_scaling.runs.curve_table import read_curves_csv

    target, pool = read_curves_csv(args.curve)
    pool = [Curve(**c) for c in pool]
    if args.tracking_uri or args.experiment:  # the experiment's runs' curves join the file's other runs
        store = _store(args)
        pool += store.curves(store.select())
    result = forecast([Curve(**c) for c in target], pool, confidence=args.confidence, momentum=args.momentum, seed=args.seed)
    out = result.to_dict()
    out["fit"] = {"alpha": result.fit.alpha, "momentum": result.fit.momentum, "runs": len(result.fit.coefficients),
                  "points": result.fit.n_points}
    return out


def _forecast_text(out: dict) -> str:
    law = out["law"]
    lines = [f"run {out['run']}: annealing law L = {law['L0']:.4g} + {law['A']:.4g} S1^-{law['alpha']:.3f} "
             f"- {law['C']:.4g} S2 (momentum {law['momentum']:g}), fitted with {out['fit']['runs']} run(s), "
             f"{out['fit']['points']} points; observed to {out['progress']:.0%} of the run",
             f"interval: {out['confidence']:.0%}, {out['method']}"]
    lines += [f"note: {n}" for n in out["notes"]]
    across = out.get("law_across_runs")
    if across:
        lines.append(f"final loss: {across['loss']:.4f}, from the law across runs {across['law_loss']:.4f} (weight "
                     f"{across['weight']:.2f}) and the run's curve {across['curve_loss']:.4f}")
    has_tokens = any("tokens" in r for r in out["forecast"])
    lines.append(f"{'step':>10s} " + (f"{'tokens':>12s} " if has_tokens else "") + f"{'loss':>8s} {'low':>8s} "
                 f"{'high':>8s}")
    for r in out["forecast"]:
        lines.append(f"{r['step']:>10d} " + (f"{r.get('tokens', float('nan')):>12.4g} " if has_tokens else "")
                     + f"{r['loss']:>8.4f} {r['loss_low']:>8.4f} {r['loss_high']:>8.4f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from lightning_scaling.integrations.lightning_cli import run_cli

        return run_cli(argv[1:])
    args = build_parser().parse_args(argv)
    runners = {"demo": run_demo, "coord-check": run_coord_check, "runs": run_runs, "backtest": run_backtest,
               "predict": run_predict, "forecast": run_forecast, "plan": run_plan}
    try:
        out = runners.get(args.command, run_fit)(args)
    except (LightningScalingError, OSError) as err:
        print(redact(f"lightning-scaling {args.command}: error: {err}"), file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(out, indent=2, default=float))
    elif args.command == "demo":
        print(_demo_text(out))
    elif args.command == "coord-check":
        print(_coord_check_text(out))
    elif args.command == "runs":
        print(_runs_text(out))
    elif args.command == "backtest":
        from lightning_scaling.planner.predict import backtest_text

        print(backtest_text(out))
    elif args.command == "predict":
        print(_predict_text(out))
    elif args.command == "forecast":
        print(_forecast_text(out))
    elif args.command == "plan":
        print(_plan_text(out))
    elif args.command == "recommend" and args.runs is None:
        from lightning_scaling.planner.recommendation import recommendation_markdown

        print(recommendation_markdown(out))
    else:
        from lightning_scaling.planner.recommendation import format_text

        print(format_text(out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
