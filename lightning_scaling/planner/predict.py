"""What a size will reach before it is trained, and how well the law would have predicted the runs so far: the
`predict` and `backtest` commands' answers, for runs read from a CSV or from the run store.

`select_law` resolves the law form to use: "auto" chooses among the registered forms that the runs can feed (a
data-constrained form needs each run's unique tokens) by forward-chaining error (`evaluation.backtest.choose_form`); a
name picks one. `predict` gives the loss with its prediction interval at each (N, D) asked: calibrated by
forward chaining (`evaluation.intervals`) when the runs allow, else the bootstrap interval widened by the runs' scatter,
said in each row's ``interval``. `backtest_law` is `evaluation.backtest.backtest` of the chosen form, with the choice.
`predict_points` and `backtest_runs` take arrays instead of `Runs`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lightning_scaling.errors import ConfigurationError, LightningScalingError, ScalingDataError
from lightning_scaling.evaluation.backtest import applicable_forms, backtest, choose_form
from lightning_scaling.evaluation.intervals import calibrate, scatter, widen_by_scatter
from lightning_scaling.law.form import DEFAULT_CONFIDENCE, fit_runs
from lightning_scaling.planner.inputs import Runs
from lightning_scaling.planner.options import AUTO, FitOptions
from lightning_scaling.planner.results import Prediction

POINT_BOOTSTRAP = 200  # replicates of the fallback interval (10th-90th percentiles need no more)


def select_law(forms: dict[str, Callable], law: str, N, D, L, extra: dict | None = None, budgets=None
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
    choice = choose_form(candidates, N, D, L, extra, budgets)
    return choice["chosen"], candidates[choice["chosen"]], choice


def predict(runs: Runs, points_N, points_D, options: FitOptions, forms: dict[str, Callable],
            points_extra: dict | None = None) -> list[Prediction]:
    """The predicted loss with its interval at each (params, tokens) point, from the form `options.law` names or
    chooses (`select_law`): calibrated by forward chaining when the runs allow it, else the bootstrap of the mean
    law widened by the runs' scatter (each row's ``interval`` says which). A form that needs per-run data (the
    data-constrained form: ``unique_tokens``) reads it at the points from `points_extra`.

    Raises:
        ScalingDataError: the chosen form needs a per-point column the points lack (named).
    """
    N, D, L, extra = runs.N, runs.D, runs.L, runs.extra
    name, factory, _ = select_law(forms, options.law, N, D, L, extra, runs.budgets)
    pN, pD = np.asarray(points_N, float), np.asarray(points_D, float)
    needed = tuple(getattr(forms[name], "extra_fields", ()))
    lacking = [k for k in needed if k not in (points_extra or {})]
    if lacking:
        raise ScalingDataError(f"the law form {name!r} predicts from each point's {lacking} too (repeated data "
                               f"changes the loss): add the column(s) {lacking} to the points, or choose another "
                               "form with --law")
    pextra = {k: np.asarray(points_extra[k], float) for k in needed}
    column = {"params_column": runs.params_column}
    try:
        cal = calibrate(factory, N, D, L, options.confidence, fit_kwargs=column, extra=extra)
    except LightningScalingError:
        cal = None
    if cal is not None and cal.calibrated:
        fit, how = cal.fits[-1], "calibrated"
        low, high = cal.interval(pN, pD, extra=pextra or None)
    else:
        fit, how = fit_runs(factory, N, D, L, extra=extra, quiet=True, **column), "bootstrap+scatter"
        low, high = _scatter_widened(fit, runs, pN, pD, options, pextra)
    centre = np.asarray(fit.predict(pN, pD, **pextra), float)
    return [Prediction(float(n), float(d), float(c), float(lo), float(hi), options.confidence, name, how)
            for n, d, c, lo, hi in zip(pN, pD, centre, low, high)]


def predict_points(N, D, L, points_N, points_D, *, forms: dict[str, Callable], extra: dict | None = None,
                   params_column: str = "params", **options) -> list[dict]:
    """`predict` of the runs (N, D, L) as rows of dicts: ``params``, ``tokens``, ``loss``, ``loss_low``,
    ``loss_high``, ``confidence``, ``law`` (the form used) and ``interval``; `options` are `FitOptions` fields
    (``law``, ``confidence``, ``seed``)."""
    runs = Runs(N=np.asarray(N, float), D=np.asarray(D, float), L=np.asarray(L, float), params_column=params_column,
                extra=extra)
    return [p.to_dict() for p in predict(runs, points_N, points_D, FitOptions(**options), forms)]


def _scatter_widened(fit, runs: Runs, pN, pD, options: FitOptions, pextra: dict | None = None):
    """Bootstrap percentiles of the mean law at each point (with the point's extras, for a form that needs them),
    widened by the runs' scatter about the fit."""
    boot = fit.bootstrap(POINT_BOOTSTRAP, seed=options.seed, confidence=options.confidence)
    pextra = pextra or {}
    bounds = np.array([boot.loss_interval(n, d, **{k: v[i] for k, v in pextra.items()})
                       for i, (n, d) in enumerate(zip(pN, pD))], float).reshape(-1, 2)
    sigma = scatter(fit, runs.N, runs.D, runs.L, runs.extra)
    return widen_by_scatter(bounds[:, 0], bounds[:, 1], sigma, options.confidence)


def backtest_law(runs: Runs, options: FitOptions, forms: dict[str, Callable]) -> dict:
    """`evaluation.backtest.backtest` of the form `select_law` picks, with ``law_selection`` (None for a named form)."""
    name, factory, choice = select_law(forms, options.law, runs.N, runs.D, runs.L, runs.extra, runs.budgets)
    out = backtest(factory, runs.N, runs.D, runs.L, confidence=options.confidence, extra=runs.extra, name=name,
                   budgets=runs.budgets)
    out["law_selection"] = choice
    return out


def backtest_runs(N, D, L, *, forms: dict[str, Callable], law: str = AUTO, confidence: float = DEFAULT_CONFIDENCE,
                  extra: dict | None = None) -> dict:
    """`backtest_law` of the runs (N, D, L)."""
    runs = Runs(N=np.asarray(N, float), D=np.asarray(D, float), L=np.asarray(L, float), extra=extra)
    return backtest_law(runs, FitOptions(law=law, confidence=confidence), forms)

