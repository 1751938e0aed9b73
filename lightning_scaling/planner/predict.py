"""What a size will reach before it is trained, and how well the law would have predicted the runs so far: the
`predict` and `backtest` commands' answers, for runs read from a CSV or from the run store.

`select_law` resolves the law form to use: "auto" chooses among the registered forms that the runs can feed (a
data-constrained form needs each run's unique tokens) by forward-chaining error (`evaluation.backtest.choose_form`); a
name picks one. `predict_points` gives the loss with its prediction interval at each (N, D) asked: calibrated by
forward chaining (`evaluation.intervals`) when the runs allow, else the bootstrap interval widened by the runs' scatter,
said in each row's ``interval``. `backtest_runs` is `evaluation.backtest.backtest` of the chosen form, with the choice.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from lightning_scaling.errors import ConfigurationError, LightningScalingError, ScalingDataError
from lightning_scaling.evaluation.backtest import applicable_forms, backtest, choose_form
from lightning_scaling.evaluation.intervals import calibrate, scatter, widen_by_scatter
from lightning_scaling.law.form import DEFAULT_CONFIDENCE, fit_runs

AUTO = "auto"
POINT_BOOTSTRAP = 200  # replicates of the fallback interval (10th-90th percentiles need no more)


def select_law(forms: dict[str, Callable], law: str, N, D, L, extra: dict | None = None
               ) -> tuple[str, Callable, dict | None]:
    """(name, factory, choice): the form to fit; `choice` is `choose_form`'s answer when "auto" compared forms.

    Raises:
        ConfigurationError: `law` is neither "auto" nor a registered form (the message lists them).
        ScalingDataError: the named form needs per-run data the runs lack (e.g. unique tokens).
    """
    if law != AUTO and law not in forms:
        raise ConfigurationError(f"`law` must be '{AUTO}' or one of {sorted(forms)}, got {law!r}")
    if law != AUTO:
        missing = [k for k in getattr(forms[law], "extra_fields", ()) if k not in (extra or {})]
        if missing:
            raise ScalingDataError(f"law form {law!r} needs the column(s) {missing} for every run")
        return law, forms[law], None
    candidates = applicable_forms(forms, extra)
    if len(candidates) == 1:
        name = next(iter(candidates))
        return name, candidates[name], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        choice = choose_form(candidates, N, D, L, extra)
    return choice["chosen"], candidates[choice["chosen"]], choice


def predict_points(N, D, L, points_N, points_D, *, forms: dict[str, Callable], law: str = AUTO,
                   confidence: float = DEFAULT_CONFIDENCE, extra: dict | None = None,
                   params_column: str = "params", seed: int = 0) -> list[dict]:
    """The predicted loss with ``loss_low``/``loss_high`` at each (params, tokens) point (fresh data: no repeats).

    Each row: ``params``, ``tokens``, ``loss``, ``loss_low``, ``loss_high``, ``confidence``, ``law`` (the form used),
    ``interval`` ("calibrated", or "bootstrap+scatter" when the runs are too few to calibrate the extrapolation).
    """
    name, factory, _ = select_law(forms, law, N, D, L, extra)
    pN, pD = np.asarray(points_N, float), np.asarray(points_D, float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cal = calibrate(factory, N, D, L, confidence, fit_kwargs={"params_column": params_column}, extra=extra)
        except LightningScalingError:
            cal = None
        if cal is not None and cal.calibrated:
            fit, how = cal.fits[-1], "calibrated"
            low, high = cal.interval(pN, pD)
        else:
            fit, how = fit_runs(factory, N, D, L, extra=extra, params_column=params_column), "bootstrap+scatter"
            low, high = _scatter_widened(fit, N, D, L, pN, pD, confidence, seed, extra)
    centre = np.asarray(fit.predict(pN, pD), float)
    return [{"params": float(n), "tokens": float(d), "loss": float(c), "loss_low": float(lo), "loss_high": float(hi),
             "confidence": confidence, "law": name, "interval": how}
            for n, d, c, lo, hi in zip(pN, pD, centre, low, high)]


def _scatter_widened(fit, N, D, L, pN, pD, confidence, seed, extra):
    """Bootstrap percentiles of the mean law at each point, widened by the runs' scatter about the fit."""
    boot = fit.bootstrap(POINT_BOOTSTRAP, seed=seed, confidence=confidence)
    bounds = np.array([boot.loss_interval(n, d) for n, d in zip(pN, pD)], float).reshape(-1, 2)
    return widen_by_scatter(bounds[:, 0], bounds[:, 1], scatter(fit, N, D, L, extra), confidence)


def backtest_runs(N, D, L, *, forms: dict[str, Callable], law: str = AUTO, confidence: float = DEFAULT_CONFIDENCE,
                  extra: dict | None = None) -> dict:
    """`evaluation.backtest.backtest` of the form `select_law` picks, with ``law_selection`` (None for a named form)."""
    name, factory, choice = select_law(forms, law, N, D, L, extra)
    out = backtest(factory, N, D, L, confidence=confidence, extra=extra, name=name)
    out["law_selection"] = choice
    return out


def backtest_text(result: dict) -> str:
    """The backtest as a table, one fold per line."""
    pct = int(round(100 * result["confidence"]))
    lines = [f"backtest of the {result['form']} law: forward chaining over compute "
             f"({'one fold per isoFLOP budget' if result['design'] == 'isoflop' else 'shares of the runs by compute'})"]
    if result.get("law_selection"):
        lines.append(f"law form: {result['law_selection']['reason']}")
    lines.append(f"  {'fit on':>7} {'up to C':>10} {'predict':>7} {'at C':>10} {'MAPE':>7} {'max err':>8} "
                 f"{f'{pct}% covered':>12}  N_opt law / isoFLOP")
    for f in result["folds"]:
        covered = f"{f['covered']}/{f['test_runs']}" if f["covered"] is not None else "n/a"
        iso = ", ".join(f"{g['ratio']:.2f}" for g in f["isoflop"]) or "-"
        lines.append(f"  {f['train_runs']:>7} {f['train_max_flops']:>10.3g} {f['test_runs']:>7} {f['test_flops']:>10.3g} "
                     f"{f['mape']:>6.2f}% {f['max_error']:>7.2f}% {covered:>12}  {iso}")
    if result["held_out"]:
        cov = (f"; intervals covered {result['covered']} of the calibrated folds' runs ({100 * result['coverage']:.0f}%)"
               if result["coverage"] is not None else "")
        lines.append(f"pooled: MAPE {result['mape']:.2f}% over {result['held_out']} held-out runs{cov}")
    lines.append(result["sentence"])
    return "\n".join(lines)
