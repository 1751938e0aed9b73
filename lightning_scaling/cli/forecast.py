"""`forecast`: the rest of a run's loss curve from its first part and the other runs' curves (`curves.forecast`)."""

from __future__ import annotations

from lightning_scaling.cli import sources
from lightning_scaling.cli.command import Command
from lightning_scaling.cli.options import CONFIDENCE_BRIEF, FORMAT, SEED, TRACKING, argument, momentum
from lightning_scaling.curves import Curve, forecast
from lightning_scaling.runs import read_curves_csv

EPILOG = ("CSV columns: step, lr, loss; optional tokens, params, run, curve. Rows with an empty loss are the planned "
          "rest of the run; other runs' rows give the law's shape and calibrate the interval; with tokens and params "
          "(each run's N) the law across the runs' final losses forecasts the run's final loss too, stacked with its "
          "curve.")


def run_forecast(args) -> dict:
    """Forecast the planned rows of CURVE.csv (`curves.forecast`)."""
    target, pool = read_curves_csv(args.curve)
    pool = [Curve(**c) for c in pool]
    if args.tracking_uri or args.experiment:  # the experiment's runs' curves join the file's other runs
        store = sources.store(args)
        pool += store.curves(store.select())
    return _forecast([Curve(**c) for c in target], pool, args)


def _forecast(target: list, pool: list, args) -> dict:
    result = forecast(target, pool, confidence=args.confidence, momentum=args.momentum, seed=args.seed)
    out = result.to_dict()
    out["fit"] = {"alpha": result.fit.alpha, "momentum": result.fit.momentum, "runs": len(result.fit.coefficients),
                  "points": result.fit.n_points}
    return out


def forecast_text(out: dict) -> str:
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


FORECAST = Command(
    "forecast", "forecast the rest of a run's loss curve (its rows with an empty loss) from its first part and the "
    "other runs in the file (learning-rate annealing law)",
    (argument("curve", metavar="CURVE.csv", help="the run's curve so far and its planned steps"), TRACKING,
     CONFIDENCE_BRIEF,
     argument("--momentum", type=momentum, default=None, help="annealing momentum lam in [0, 1) (default: fitted)"),
     SEED.but(help="seed of the bootstrap used without other runs (default 0)"), FORMAT),
    run_forecast, forecast_text, epilog=EPILOG)
