"""How well a law form predicts runs it has not seen, measured on the runs themselves, and the choice between forms.

Forward chaining over compute (rolling-origin evaluation, as for time series): the law is fitted on the runs below
a compute level and predicts the next ones, the way the recommendation will be used. The folds (`forward_folds`):

- when the runs form isoFLOP groups (at least `MIN_GROUPS` budgets, a median of `MIN_GROUP_SIZE` runs each), one fold
  per budget: fit on every smaller budget, predict that budget's runs; for the largest `MAX_FOLDS` budgets whose
  smaller budgets hold at least half of the runs (all budgets with `MIN_TRAIN` runs below them, if that leaves
  fewer than two);
- otherwise, by shares of the runs ordered by C = 6ND: fit on the smallest 50%, predict the next 10%; fit on 60%,
  predict the next 10%; ... up to fitting 90% and predicting the rest.

The test blocks are disjoint, so each run is predicted once, by the fit that extrapolates to it the least.

`backtest` reports per fold the MAPE, the coverage of the prediction intervals (`evaluation.intervals`, calibrated on the
fold's own training runs: nothing of the test block is seen) and, where the test block is an isoFLOP group, the
law's compute-optimal N at that budget against the minimum of the group's parabola in log N (`law.isoflop`).

`choose_form` compares law forms on the same folds: the baseline (the first form, Chinchilla's) is kept unless an
alternative's per-run absolute relative errors are lower with a paired t statistic above `SELECTION_T` (a one-sided
test at about 2.5%). A richer form always fits the training runs at least as well; the guard asks that it predict
held-out runs better by more than their scatter, so that noise in a few runs does not buy a form extra parameters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lightning_scaling.errors import LightningScalingError
from lightning_scaling.evaluation.intervals import MIN_HELD_OUT, calibrate
from lightning_scaling.law.form import DEFAULT_CONFIDENCE, check_law_form, extras_for, fit_runs, predict_runs
from lightning_scaling.law.isoflop import group_by_flops, isoflop_groups
from lightning_scaling.options import check_confidence
from lightning_scaling.schedules.flops import training_compute

MIN_GROUPS = 3  # isoFLOP folds need at least three budgets (two to fit on, one to predict)
MIN_GROUP_SIZE = 3  # ... with a median of three runs each (the sizes of a parabola)
PREFIX_FOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)  # otherwise: fit on these shares of the runs by compute
FOLD_STEP = 0.1  # ... and predict the next share
MIN_TRAIN = 5  # a fold trains on at least this many runs
MAX_FOLDS = 5  # isoFLOP folds: the largest budgets (the extrapolations that matter, and a bounded cost)
HULL_TOLERANCE = 1e-9  # a checkpoint on the edge of the final losses' hull (the same N as a final) is inside
SELECTION_T = 2.0  # an alternative form replaces the baseline only when it predicts better with paired t above this


def inside_hull(N, D, at_N, at_D) -> np.ndarray:
    """Whether each (at_N, at_D) lies in the convex hull of the points (N, D), in logs (on its edge counts);
    all False when the points span no area (one size, or one token count)."""
    from scipy.spatial import Delaunay, QhullError

    at = np.column_stack([np.log(np.asarray(at_N, float)), np.log(np.asarray(at_D, float))])
    base = np.unique(np.column_stack([np.log(np.asarray(N, float)), np.log(np.asarray(D, float))]), axis=0)
    if len(at) == 0 or len(base) < 3:
        return np.zeros(len(at), bool)
    try:
        triangulation = Delaunay(base)
    except QhullError:  # collinear
        return np.zeros(len(at), bool)
    return triangulation.find_simplex(at, tol=HULL_TOLERANCE) >= 0


@dataclass(frozen=True)
class Fold:
    """Indices of the runs a fold fits on (`train`) and predicts (`test`), and its compute cut."""

    train: np.ndarray
    test: np.ndarray
    train_max_flops: float
    test_flops: float  # the geometric mean compute of the test block
    kind: str  # "isoflop" or "prefix"

    def label(self) -> str:
        if self.kind == "isoflop":
            return f"the law fitted on budgets below {self.test_flops:.2g} predicted the {self.test_flops:.2g} runs"
        return (f"the law fitted on the runs up to {self.train_max_flops:.2g} FLOPs predicted the next "
                f"{len(self.test)} (around {self.test_flops:.2g})")


def forward_folds(N, D, min_train: int = MIN_TRAIN) -> list[Fold]:
    """The forward-chaining folds of these runs (module docstring), smallest compute first."""
    N, D = np.asarray(N, float), np.asarray(D, float)
    C = training_compute(N, D)
    logC = np.log(C)
    groups = group_by_flops(C)
    folds = []
    if len(groups) >= MIN_GROUPS and float(np.median([len(g) for g in groups])) >= MIN_GROUP_SIZE:
        for k in range(1, len(groups)):
            train = np.concatenate(groups[:k])
            if len(train) >= min_train:
                folds.append(Fold(train, groups[k], float(C[train].max()), float(np.exp(logC[groups[k]].mean())),
                                  "isoflop"))
        half = [f for f in folds if 2 * len(f.train) >= len(N)]
        return (half if len(half) >= 2 else folds)[-MAX_FOLDS:]
    order = np.argsort(C, kind="stable")
    n = len(N)
    for share in PREFIX_FOLDS:
        size, end = int(round(share * n)), int(round((share + FOLD_STEP) * n))
        end = n if share == PREFIX_FOLDS[-1] else end
        if size < min_train or end <= size or (folds and size <= len(folds[-1].train)):
            continue
        train, test = order[:size], order[size:end]
        folds.append(Fold(train, test, float(C[train].max()), float(np.exp(logC[test].mean())), "prefix"))
    return folds


def _fit_quietly(factory, N, D, L, idx, extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_runs(factory, N, D, L, idx, extra)


def backtest(factory: Callable, N, D, L, *, confidence: float = DEFAULT_CONFIDENCE, extra: dict | None = None,
             intervals: bool = True, name: str | None = None, checkpoints=None) -> dict:
    """Per forward-chaining fold: MAPE, interval coverage and the isoFLOP check (module docstring); JSON-ready.

    Returns:
        {"form", "design", "confidence", "folds": [...], "mape", "coverage", "covered", "held_out", "sentence"}:
        each fold has ``train_runs``, ``train_max_flops``, ``test_runs``, ``test_flops``, ``mape`` (percent),
        ``covered`` and ``coverage`` (None when the fold's runs are too few to calibrate intervals: ``calibrated``
        False), ``isoflop`` (per group of the test block: ``flops``, ``params_opt_isoflop``, ``params_opt_law``,
        ``ratio``). The totals pool the folds; ``sentence`` is the last fold in words.

        With `checkpoints` (`curves.correction.CheckpointPoints` of these runs) each fold fits on its training runs'
        final losses and their schedule-corrected checkpoints (those inside the hull of the training runs' (log N,
        log D), as `CheckpointPoints.within` keeps them for the whole fit), and predicts the test runs' final
        losses (the folds and the test points are the same as without): the whole-curve fit's backtest, without
        intervals.
    """
    check_confidence(confidence)
    N, D, L = (np.asarray(x, float) for x in (N, D, L))
    folds = forward_folds(N, D)
    out_folds = []
    if checkpoints is not None and len(checkpoints):
        intervals, extra = False, None
        NN, DD, LL = (np.concatenate([a, b]) for a, b in ((N, checkpoints.N), (D, checkpoints.D),
                                                           (L, checkpoints.loss)))
    else:
        checkpoints, NN, DD, LL = None, N, D, L
    for fold in folds:
        cal = None
        train = fold.train
        if checkpoints is not None:  # the training runs' checkpoints where their final losses anchor the law
            inside = inside_hull(N[fold.train], D[fold.train], checkpoints.N, checkpoints.D)
            train = np.concatenate([train, len(N) + np.nonzero(np.isin(checkpoints.run, fold.train) & inside)[0]])
        if intervals:
            sub = {k: np.asarray(v, float)[fold.train] for k, v in (extra or {}).items()}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cal = calibrate(factory, N[fold.train], D[fold.train], L[fold.train], confidence, extra=sub)
                fit = cal.fits[-1]
            except LightningScalingError:
                continue
        else:
            try:
                fit = _fit_quietly(factory, NN, DD, LL, train, extra)
            except LightningScalingError:
                continue
        predicted = predict_runs(fit, N, D, fold.test, extra)
        errors = np.abs(predicted - L[fold.test]) / L[fold.test]
        row = {"kind": fold.kind, "train_runs": len(fold.train), "train_max_flops": fold.train_max_flops,
               "test_runs": len(fold.test), "test_flops": fold.test_flops,
               "mape": 100.0 * float(errors.mean()), "max_error": 100.0 * float(errors.max()),
               "calibrated": bool(cal is not None and cal.calibrated), "covered": None, "coverage": None,
               "label": fold.label()}
        if cal is not None and cal.calibrated:
            low, high = cal.interval(N[fold.test], D[fold.test], extra=extras_for(fit, extra, fold.test) or None)
            inside = (L[fold.test] >= low) & (L[fold.test] <= high)
            row["covered"], row["coverage"] = int(inside.sum()), float(inside.mean())
            row["median_width"] = 100.0 * float(np.median((high - low) / predicted))
        row["isoflop"] = _isoflop_check(fit, N[fold.test], D[fold.test], L[fold.test])
        out_folds.append(row)
    out = _summary(out_folds, name or _form_name(factory), folds, confidence)
    out["data"] = "final losses and schedule-corrected checkpoints" if checkpoints is not None else "final losses"
    return out


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


def _summary(rows: list[dict], name: str, folds: list[Fold], confidence: float) -> dict:
    held = sum(r["test_runs"] for r in rows)
    covered_rows = [r for r in rows if r["covered"] is not None]
    out = {"form": name, "design": (folds[0].kind if folds else None), "confidence": confidence, "folds": rows,
           "held_out": held,
           "mape": (sum(r["mape"] * r["test_runs"] for r in rows) / held) if held else None,
           "covered": sum(r["covered"] for r in covered_rows) if covered_rows else None,
           "coverage": (sum(r["covered"] for r in covered_rows) / sum(r["test_runs"] for r in covered_rows)
                        if covered_rows else None)}
    out["sentence"] = backtest_sentence(out)
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
            fit = _fit_quietly(factory, N, D, L, fold.train, extra)
            predicted = predict_runs(fit, N, D, fold.test, extra)
            out.append(np.abs(predicted - L[fold.test]) / L[fold.test])
        except LightningScalingError:
            out.append(np.full(len(fold.test), np.nan))
    return np.concatenate(out) if out else np.zeros(0)


def applicable_forms(forms: dict[str, Callable], extra: dict | None = None) -> dict[str, Callable]:
    """The forms whose per-run extras (``extra_fields``) are all in `extra`, the baseline "chinchilla" first."""
    usable = {name: f for name, f in forms.items() if all(k in (extra or {}) for k in getattr(f, "extra_fields", ()))}
    return dict(sorted(usable.items(), key=lambda item: item[0] != "chinchilla"))


def choose_form(factories: dict[str, Callable], N, D, L, extra: dict | None = None) -> dict:
    """Pick a law form by forward-chaining error (module docstring): the first of `factories` is the baseline.

    Returns:
        {"chosen", "reason", "forms": {name: {"mape", "held_out"}}, "t": {name: paired t against the baseline}}.
    """
    names = list(factories)
    for name in names:
        check_law_form(factories[name](), f"law form {name!r}")
    baseline = names[0]
    N, D, L = (np.asarray(x, float) for x in (N, D, L))
    folds = forward_folds(N, D)
    errors = {name: forward_errors(factories[name], N, D, L, folds, extra) for name in names}
    ok = np.all([np.isfinite(e) for e in errors.values()], axis=0) if folds else np.zeros(0, bool)
    forms = {name: {"mape": 100.0 * float(errors[name][ok].mean()) if ok.any() else None,
                    "held_out": int(ok.sum())} for name in names}
    t = {}
    for name in names[1:]:
        diff = errors[baseline][ok] - errors[name][ok]
        sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
        t[name] = float(diff.mean() / (sd / math.sqrt(len(diff)))) if sd > 0 else 0.0
    out = {"baseline": baseline, "forms": forms, "t": t, "folds": len(folds), "threshold": SELECTION_T}
    better = [name for name in names[1:] if t[name] > SELECTION_T]
    if int(ok.sum()) < 2:
        out["chosen"] = baseline
        out["reason"] = (f"{baseline}: too few runs above the smallest compute to compare forms by forward-chaining "
                         "error")
        return out
    chosen = max(better, key=lambda name: t[name]) if better else baseline
    out["chosen"] = chosen
    b = forms[baseline]["mape"]
    if chosen != baseline:
        out["reason"] = (f"{chosen}: predicted the {forms[chosen]['held_out']} runs held out in {len(folds)} "
                         f"forward-chaining folds with MAPE {forms[chosen]['mape']:.2f}% against {baseline}'s "
                         f"{b:.2f}% (paired t = {t[chosen]:.1f} > {SELECTION_T:g})")
    else:
        others = ", ".join(f"{name} {forms[name]['mape']:.2f}% (t = {t[name]:.1f})" for name in names[1:])
        out["reason"] = (f"{baseline}: forward-chaining MAPE {b:.2f}% over {forms[baseline]['held_out']} held-out "
                         f"runs; no alternative predicts them better with paired t > {SELECTION_T:g}"
                         + (f" ({others})" if others else ""))
    return out
