"""How well a law form predicts runs it has not seen, measured on the runs themselves, and the choice between forms.

Forward chaining over compute (rolling-origin evaluation, as for time series): the law is fitted on the runs below
a compute level and predicts the next ones, the way the recommendation will be used. The folds are those of
`evaluation.folds.forward_folds`: one per isoFLOP budget where the runs form isoFLOP groups, otherwise by shares of the
runs ordered by C = 6ND (fit on the smallest 50%, predict the next 10%; ... up to fitting 90% and predicting the
rest). The test blocks are disjoint, so each run is predicted once, by the fit that extrapolates to it the least.

`backtest` reports per fold the MAPE, the coverage of the prediction intervals (`evaluation.intervals`, calibrated on
the fold's own training runs: nothing of the test block is seen), the fold fit's parameters on their search box
(``boundary``: the fits are made quietly, their bound hits reported here instead of as warnings) and, where the
test block is an isoFLOP group, the law's compute-optimal N at that budget against the minimum of the group's
parabola in log N (`law.isoflop`).

`choose_form` compares law forms on the same folds: the baseline (the first form, Chinchilla's) is kept unless an
alternative's per-run absolute relative errors are lower with a paired t statistic above `SELECTION_T` (a one-sided
test at about 2.5%). A richer form always fits the training runs at least as well; the guard asks that it predict
held-out runs better by more than their scatter, so that noise in a few runs does not buy a form extra parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lightning_scaling.errors import LightningScalingError
from lightning_scaling.evaluation.folds import Fold, forward_folds, inside_hull
from lightning_scaling.evaluation.intervals import MIN_HELD_OUT, calibrate
from lightning_scaling.law.form import DEFAULT_CONFIDENCE, check_law_form, extras_for, fit_runs, predict_runs
from lightning_scaling.law.isoflop import isoflop_groups
from lightning_scaling.options import check_confidence

SELECTION_T = 2.0  # an alternative form replaces the baseline only when it predicts better with paired t above this


@dataclass(frozen=True)
class FoldScore:
    """What one fold of the backtest measured; `to_dict` is the fold's JSON row."""

    fold: Fold
    mape: float  # percent
    max_error: float  # percent
    isoflop: list  # per isoFLOP group of the test block: the law's N_opt against the group's parabola
    boundary: tuple = ()  # the fold fit's messages for parameters on their search box
    covered: int | None = None  # test runs inside their calibrated interval (None: not calibrated)
    coverage: float | None = None
    median_width: float | None = None  # percent of the prediction

    def to_dict(self) -> dict:
        fold = self.fold
        row = {"kind": fold.kind, "train_runs": len(fold.train), "train_max_flops": fold.train_max_flops,
               "test_runs": len(fold.test), "test_flops": fold.test_flops, "mape": self.mape,
               "max_error": self.max_error, "calibrated": self.covered is not None, "covered": self.covered,
               "coverage": self.coverage, "label": fold.label()}
        if self.median_width is not None:
            row["median_width"] = self.median_width
        row["isoflop"] = self.isoflop
        row["boundary"] = list(self.boundary)
        return row


@dataclass(frozen=True)
class Backtest:
    """The backtest of one law form (`backtest`); `to_dict` is its JSON."""

    form: str
    folds: tuple  # FoldScore per fold that could be fitted
    design: str | None  # the folds' kind, None without folds
    confidence: float
    data: str  # what each fold fitted on

    @property
    def held_out(self) -> int:
        return sum(len(f.fold.test) for f in self.folds)

    def to_dict(self) -> dict:
        held = self.held_out
        calibrated = [f for f in self.folds if f.covered is not None]
        out = {"form": self.form, "design": self.design, "confidence": self.confidence,
               "folds": [f.to_dict() for f in self.folds], "held_out": held,
               "mape": (sum(f.mape * len(f.fold.test) for f in self.folds) / held) if held else None,
               "covered": sum(f.covered for f in calibrated) if calibrated else None,
               "coverage": (sum(f.covered for f in calibrated) / sum(len(f.fold.test) for f in calibrated)
                            if calibrated else None)}
        return {**out, "sentence": backtest_sentence(out), "data": self.data}


def _with_checkpoints(N, D, L, checkpoints):
    """The final points followed by the checkpoints' (N, D, L) (the final points alone without checkpoints)."""
    if checkpoints is None:
        return N, D, L
    return tuple(np.concatenate([a, b]) for a, b in ((N, checkpoints.N), (D, checkpoints.D), (L, checkpoints.loss)))


def _fold_train(fold: Fold, N, D, checkpoints) -> np.ndarray:
    """The fold's training runs, and their checkpoints where their final losses anchor the law (indices after the
    final points)."""
    if checkpoints is None:
        return fold.train
    inside = inside_hull(N[fold.train], D[fold.train], checkpoints.N, checkpoints.D)
    return np.concatenate([fold.train, len(N) + np.nonzero(np.isin(checkpoints.run, fold.train) & inside)[0]])


def _score(fold: Fold, fit, cal, N, D, L, extra) -> FoldScore:
    """The fold's errors on its test runs, and its interval coverage when `cal` is calibrated."""
    test = fold.test
    predicted = predict_runs(fit, N, D, test, extra)
    errors = np.abs(predicted - L[test]) / L[test]
    covered = coverage = width = None
    if cal is not None and cal.calibrated:
        low, high = cal.interval(N[test], D[test], extra=extras_for(fit, extra, test) or None)
        inside = (L[test] >= low) & (L[test] <= high)
        covered, coverage = int(inside.sum()), float(inside.mean())
        width = 100.0 * float(np.median((high - low) / predicted))
    return FoldScore(fold, mape=100.0 * float(errors.mean()), max_error=100.0 * float(errors.max()),
                     isoflop=_isoflop_check(fit, N[test], D[test], L[test]),
                     boundary=tuple(getattr(fit, "boundary_", None) or ()), covered=covered, coverage=coverage,
                     median_width=width)


def backtest(  # noqa: PLR0913  (the runs' own columns travel beside N, D and L: extras, checkpoints, budgets)
        factory: Callable, N, D, L, *, confidence: float = DEFAULT_CONFIDENCE, extra: dict | None = None,
        name: str | None = None, checkpoints=None, budgets=None) -> dict:
    """Per forward-chaining fold: MAPE, interval coverage and the isoFLOP check (module docstring); JSON-ready.

    Returns:
        {"form", "design", "confidence", "folds": [...], "mape", "coverage", "covered", "held_out", "sentence",
        "data"}: each fold has ``train_runs``, ``train_max_flops``, ``test_runs``, ``test_flops``, ``mape``
        (percent), ``covered`` and ``coverage`` (None when the fold's runs are too few to calibrate intervals:
        ``calibrated`` False), ``isoflop`` (per group of the test block: ``flops``, ``params_opt_isoflop``,
        ``params_opt_law``, ``ratio``), ``boundary`` (the fold fit's parameters on their search box). The totals
        pool the folds; ``sentence`` is the last fold in words.

        With `checkpoints` (`curves.correction.CheckpointPoints` of these runs) each fold fits on its training runs'
        final losses and their schedule-corrected checkpoints (those inside the hull of the training runs' (log N,
        log D), as `CheckpointPoints.within` keeps them for the whole fit), and predicts the test runs' final
        losses (the folds and the test points are the same as without): the whole-curve fit's backtest, without
        intervals. `budgets`: the runs' budget column, when they have one (`folds.budget_groups`).
    """
    check_confidence(confidence)
    N, D, L = (np.asarray(x, float) for x in (N, D, L))
    folds = forward_folds(N, D, budgets=budgets)
    if checkpoints is not None and not len(checkpoints):
        checkpoints = None
    extra = None if checkpoints is not None else extra
    NN, DD, LL = _with_checkpoints(N, D, L, checkpoints)
    scores = []
    for fold in folds:
        cal = None
        try:
            if checkpoints is None:  # the intervals, calibrated on the fold's training runs alone
                sub = {k: np.asarray(v, float)[fold.train] for k, v in (extra or {}).items()}
                cal = calibrate(factory, N[fold.train], D[fold.train], L[fold.train], confidence, extra=sub)
                fit = cal.fits[-1]
            else:
                fit = fit_runs(factory, NN, DD, LL, _fold_train(fold, N, D, checkpoints), quiet=True)
        except LightningScalingError:
            continue
        scores.append(_score(fold, fit, cal, N, D, L, extra))
    data = "final losses and schedule-corrected checkpoints" if checkpoints is not None else "final losses"
    return Backtest(name or _form_name(factory), tuple(scores), folds[0].kind if folds else None, confidence,
                    data).to_dict()


def _form_name(factory) -> str:
    return str(getattr(factory, "law_name", getattr(factory, "__name__", "law")))


def _isoflop_check(fit, N, D, L) -> list[dict]:
    groups, _ = isoflop_groups(N, D, L)
    out = []
    for g in groups:
        with np.errstate(all="ignore"):
            law_opt = float(fit.compute_optimal(g.flops).params)
        out.append({"flops": g.flops, "params_opt_isoflop": g.params_opt, "params_opt_law": law_opt,
                    "ratio": law_opt / g.params_opt if g.params_opt > 0 else math.nan, "interior": g.interior})
    return out


def backtest_sentence(result: dict) -> str:
    """The last fold in one line, e.g. "the law fitted on budgets below 3.6e11 predicted the 3.6e11 runs within
    1.2% (MAPE); its 80% intervals covered 7 of 8"."""
    if not result["folds"]:
        return "no backtest: too few runs below the largest compute to fit the law on"
    last = result["folds"][-1]
    s = f"{last['label']} within {last['mape']:.1f}% (MAPE)"
    pct = int(round(100 * result["confidence"]))
    if last["covered"] is not None:
        s += f"; its {pct}% intervals covered {last['covered']} of {last['test_runs']}"
    else:
        s += f"; too few runs below that compute to calibrate its intervals (fewer than {MIN_HELD_OUT} held out)"
    return s


def forward_errors(factory: Callable, N, D, L, folds: list[Fold], extra: dict | None = None) -> np.ndarray:
    """Absolute relative error of each test run of `folds` (concatenated; NaN where the fold's fit failed)."""
    out = []
    for fold in folds:
        try:
            fit = fit_runs(factory, N, D, L, fold.train, extra, quiet=True)
            predicted = predict_runs(fit, N, D, fold.test, extra)
            out.append(np.abs(predicted - L[fold.test]) / L[fold.test])
        except LightningScalingError:
            out.append(np.full(len(fold.test), np.nan))
    return np.concatenate(out) if out else np.zeros(0)


def applicable_forms(forms: dict[str, Callable], extra: dict | None = None) -> dict[str, Callable]:
    """The forms whose per-run extras (``extra_fields``) are all in `extra`, the baseline "chinchilla" first."""
    usable = {name: f for name, f in forms.items() if all(k in (extra or {}) for k in getattr(f, "extra_fields", ()))}
    return dict(sorted(usable.items(), key=lambda item: item[0] != "chinchilla"))


@dataclass(frozen=True)
class FormChoice:
    """The law form `choose_form` picked, and the forward-chaining errors it picked it by; `to_dict` is its JSON."""

    baseline: str
    forms: dict  # name -> {"mape": percent over the runs every form predicted (None: none), "held_out"}
    t: dict  # name -> paired t of its errors against the baseline's
    folds: int
    chosen: str
    reason: str
    threshold: float = SELECTION_T

    def to_dict(self) -> dict:
        return {"baseline": self.baseline, "forms": self.forms, "t": self.t, "folds": self.folds,
                "threshold": self.threshold, "chosen": self.chosen, "reason": self.reason}


def _paired_t(baseline: np.ndarray, other: np.ndarray) -> float:
    """The paired t statistic of baseline - other (0 when the differences do not vary)."""
    diff = baseline - other
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    return float(diff.mean() / (sd / math.sqrt(len(diff)))) if sd > 0 else 0.0


def _choice(names: list[str], forms: dict, t: dict, n_folds: int) -> tuple[str, str]:
    """(the chosen form, the reason in words) from the forms' forward-chaining MAPE and paired t."""
    baseline = names[0]
    if forms[baseline]["held_out"] < 2:
        return baseline, (f"{baseline}: too few runs above the smallest compute to compare forms by "
                          "forward-chaining error")
    better = [name for name in names[1:] if t[name] > SELECTION_T]
    chosen = max(better, key=lambda name: t[name]) if better else baseline
    b = forms[baseline]["mape"]
    if chosen != baseline:
        return chosen, (f"{chosen}: predicted the {forms[chosen]['held_out']} runs held out in {n_folds} "
                        f"forward-chaining folds with MAPE {forms[chosen]['mape']:.2f}% against {baseline}'s "
                        f"{b:.2f}% (paired t = {t[chosen]:.1f} > {SELECTION_T:g})")
    others = ", ".join(f"{name} {forms[name]['mape']:.2f}% (t = {t[name]:.1f})" for name in names[1:])
    return baseline, (f"{baseline}: forward-chaining MAPE {b:.2f}% over {forms[baseline]['held_out']} held-out "
                      f"runs; no alternative predicts them better with paired t > {SELECTION_T:g}"
                      + (f" ({others})" if others else ""))


def choose_form(factories: dict[str, Callable], N, D, L, extra: dict | None = None, budgets=None) -> dict:
    """Pick a law form by forward-chaining error (module docstring): the first of `factories` is the baseline.

    Returns:
        {"baseline", "forms": {name: {"mape", "held_out"}}, "t": {name: paired t against the baseline}, "folds",
        "threshold", "chosen", "reason"} (`FormChoice.to_dict`).
    """
    names = list(factories)
    for name in names:
        check_law_form(factories[name](), f"law form {name!r}")
    N, D, L = (np.asarray(x, float) for x in (N, D, L))
    folds = forward_folds(N, D, budgets=budgets)
    errors = {name: forward_errors(factories[name], N, D, L, folds, extra) for name in names}
    ok = np.all([np.isfinite(e) for e in errors.values()], axis=0) if folds else np.zeros(0, bool)
    forms = {name: {"mape": 100.0 * float(errors[name][ok].mean()) if ok.any() else None,
                    "held_out": int(ok.sum())} for name in names}
    t = {name: _paired_t(errors[names[0]][ok], errors[name][ok]) for name in names[1:]}
    chosen, reason = _choice(names, forms, t, len(folds))
    return FormChoice(names[0], forms, t, len(folds), chosen, reason).to_dict()
