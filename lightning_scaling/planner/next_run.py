"""Plan the next run from the runs logged so far: the closing hook's decision, without Lightning or MLflow.

`plan_next_run` takes the `Selection` of usable runs and returns one JSON-ready dict: the fitted law with
bootstrap intervals, the compute-optimal next run for the budget (an explicit `next_flops`, or `growth` times the
largest compute logged so far, as C = 6ND), the initial dense size of a sparse next run whose N_avg is the optimum
under the pruning schedule (Jin et al. 2025), the learning-rate and muP settings to reuse, a concrete architecture
(from the `propose_architecture` plugin hook, passed in as a function), the runs used and left out, and one
sentence saying what to run next. With too few runs it returns `status: "insufficient_runs"` and the runs to add
instead; with a degenerate fit (an exponent on its bound, or a term that carries no signal: the ``refuses`` entries of the
law form's `degenerate_`; E at 0 is flagged in ``boundary`` but does not refuse) `status: "degenerate"`, the fitted law and its figures, which axis lacks spread, and the runs to add, but
no run size.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from lightning_scaling.curves.correction import schedule_corrected
from lightning_scaling.errors import ConfigurationError, InsufficientRunsError, LightningScalingError, ScalingDataError
from lightning_scaling.evaluation.backtest import applicable_forms, backtest, choose_form
from lightning_scaling.evaluation.intervals import MIN_HELD_OUT, calibrate, scatter, widen_by_scatter
from lightning_scaling.law.fit import ChinchillaFit
from lightning_scaling.law.form import DEFAULT_CONFIDENCE, LawForm, check_law_form, shared_fits
from lightning_scaling.options import check_positive
from lightning_scaling.planner.recommendation import (
    figure_data,
    format_count,
    recommend,
    recommendation_sentence,
    summarize_fit,
)
from lightning_scaling.runs.records import Selection
from lightning_scaling.runs.schema import DATA_UNIT, POWER_DECAY_FRACTION
from lightning_scaling.runs.validation import suggest_runs
from lightning_scaling.schedules.flops import training_compute
from lightning_scaling.schedules.sparsity import END_FRACTION, START_FRACTION, initial_params_for_average

DEFAULT_GROWTH = 4.0  # each run 4x the compute of the largest so far: big enough to learn, small enough to be safe


def law_inputs(used) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(N, D, loss, params_column) of run records: N is N_avg for all when any run is sparse, else the dense count."""
    sparse = any(r.sparse for r in used)
    N = np.array([(r.params if sparse else (r.params_dense or r.params)) for r in used], float)
    D = np.array([r.tokens for r in used], float)
    L = np.array([r.loss for r in used], float)
    return N, D, L, "params_avg" if sparse else "params"


def validate_budget(next_flops, growth) -> None:
    """The next run's budget: an explicit `next_flops` (or None), and the `growth` factor, both numbers > 0."""
    check_positive(next_flops, "next_flops", or_none=True)
    check_positive(growth, "growth")


def plan_next_run(
    selection: Selection,
    *,
    next_flops: float | None = None,
    growth: float = DEFAULT_GROWTH,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    pruning: dict | None = None,
    settings: dict | None = None,
    hparams: dict | None = None,
    propose_architecture: Callable[[float, dict], dict | None] | None = None,
    law_factory: Callable[[], LawForm] = ChinchillaFit,
    law_forms: dict[str, Callable[[], LawForm]] | None = None,
    curves: list | None = None,
    use_curves: str = "auto",
) -> dict:
    """The recommendation for the next run (see the module docstring).

    Args:
        selection: usable runs and the excluded ones with reasons (`records.select_runs`).
        next_flops: the next run's compute budget; default `growth` x the largest 6ND among the runs used.
        growth: see `next_flops`.
        n_bootstrap: bootstrap replicates for the intervals (0 for none).
        seed, confidence: of the bootstrap.
        pruning: the pruning schedule the next run will use: {"final_sparsity", "start_fraction",
            "end_fraction", "prunable_fraction"}; then the next run's initial dense size is reported too.
        settings: learning-rate and muP settings to reuse (passed through).
        hparams: the hyperparameters of the run just finished (for the architecture proposal).
        propose_architecture: `f(params, hparams) -> dict | None`.
        law_factory: builds the estimator: any law form (`lightning_scaling.law.form`), e.g. a registered one.
        law_forms: several forms to choose from by forward-chaining error (`evaluation.backtest.choose_form`; the first,
            or "chinchilla" when present, is the baseline); forms that need per-run extras the runs do not carry
            (unique tokens) are left out. Overrides `law_factory`; the choice, its reason and every form's
            prediction are in ``law_selection``.
        curves: the runs' loss curves (`curves.forecast.Curve`, `run` = the run id; the store's `curves(...,
            dense_lr=True)`): their checkpoints, corrected for the schedule (`curves.correction`), join the fit.
        use_curves: "auto" (default): fit on the final losses and the checkpoints when the forward-chaining
            backtest predicts the held-out runs' final losses better that way than from final losses alone;
            "always"; "never". ``data`` in the result says which data the fit used, and why.
    """
    validate_budget(next_flops, growth)
    if use_curves not in USE_CURVES:
        raise ConfigurationError(f"`use_curves` must be one of {USE_CURVES}, got {use_curves!r}")
    with shared_fits():  # the calibration, backtest and choice of form refit the same prefixes: fit each once
        return _plan(selection, next_flops, growth, n_bootstrap, seed, confidence, pruning, settings, hparams,
                     propose_architecture, law_factory, law_forms, curves, use_curves)


USE_CURVES = ("auto", "always", "never")


def _checkpoints(used, N, D, curves, use_curves: str):
    """The schedule-corrected checkpoints of the dense runs' curves, or (None, why not); with sparse runs in the
    fit N is N_avg, which for a dense run is its dense count all along."""
    if use_curves == "never":
        return None, "use_curves='never'"
    if not curves:
        return None, "no loss curves logged (validation at several steps of each run gives them)"
    dense = {r.run_id for r in used if not r.sparse}  # a pruned run's N_avg moves along it: its final loss only
    curves = [c for c in curves if c.run in dense]
    if not curves:
        return None, "only sparse runs have loss curves (N_avg changes along a pruned run)"
    fractions = {}
    for r in used:
        f = _float_or_none(r.config.get(POWER_DECAY_FRACTION))
        if f is not None:
            fractions[r.run_id] = f
    points = schedule_corrected(curves, [r.run_id for r in used], N, D, fractions)
    if not len(points):
        return None, "no run has a validation point between a quarter of the run and its end"
    points = points.within(N, D)
    if not len(points):
        return None, ("no checkpoint lies where the final losses anchor the law (inside their range of sizes and "
                      "tokens): run a size at two budgets or more")
    return points, None


def _float_or_none(x):
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _plan(selection, next_flops, growth, n_bootstrap, seed, confidence, pruning, settings, hparams,
          propose_architecture, law_factory, law_forms, curves=None, use_curves="auto") -> dict:
    used = selection.used
    unit = data_unit_of(used)
    N, D, L, params_column = law_inputs(used)
    sparse = params_column == "params_avg"
    runs = {
        "used": [{"run_id": r.run_id, "run_name": r.run_name, "params": r.params, "tokens": r.tokens,
                  "flops": r.flops, "compute_6nd": float(training_compute(n, r.tokens)), "loss": r.loss,
                  "sparsity": r.sparsity}
                 for r, n in zip(used, N)],
        "excluded": [{"run_id": r.run_id, "run_name": r.run_name, "reason": why} for r, why in selection.excluded],
    }
    # The law's compute is C = 6ND (Hoffmann et al. 2022), the C the allocation spends; the budget rule and the isoFLOP
    # groups use it too, so "4x the largest compute" is 4x in the units of the recommendation. The measured FLOPs
    # (`scaling/flops`) count attention and embeddings as well, which for small models is noticeably more.
    C = training_compute(N, D)
    largest = float(C.max()) if len(C) else None
    budget = float(next_flops) if next_flops is not None else (growth * largest if largest else None)
    base = {"runs": runs, "settings": settings or {}, "n_runs": len(used), "n_excluded": len(selection.excluded),
            "data_unit": unit,
            "budget_rule": (f"explicit next_flops = {next_flops:.3g}" if next_flops is not None
                            else f"{growth:g}x the largest compute logged ({largest:.3g} FLOPs as 6ND)" if largest
                            else None)}
    choice, factory = None, law_factory
    candidates = applicable_forms(law_forms) if law_forms else {}  # run records carry no extras
    if len(candidates) == 1:
        factory = next(iter(candidates.values()))
    elif len(candidates) > 1:
        choice = choose_form(candidates, N, D, L)
        factory = candidates[choice["chosen"]]
    estimator = factory()
    check_law_form(estimator)
    labels = [f"run {r.run_name or r.run_id}" for r in used]
    points, why_not = _checkpoints(used, N, D, curves, use_curves)
    data = {"used": "final losses", "final_points": len(N), "checkpoint_points": 0}
    final_bt = curve_bt = None
    if points is not None:
        final_bt = backtest(factory, N, D, L, confidence=confidence)
        curve_bt = backtest(factory, N, D, L, confidence=confidence, checkpoints=points)
        a, b = final_bt["mape"], curve_bt["mape"]
        if use_curves == "always":
            why_not = None
        elif a is None or b is None:
            why_not = "too few runs to compare final-only and whole-curve fits by forward chaining"
        elif b >= a:
            why_not = f"the whole-curve fit's backtest MAPE {b:.2f}% is not below the final-only fit's {a:.2f}%"
        data.update(checkpoints=points.to_dict(), backtest_mape={"final_only": a, "whole_curve": b})
    whole = points is not None and why_not is None
    fit_N, fit_D, fit_L = N, D, L
    if whole:
        fit_N, fit_D, fit_L = (np.concatenate([x, y]) for x, y in ((N, points.N), (D, points.D), (L, points.loss)))
        labels = labels + [f"checkpoint at {d:.3g} of {labels[i]}" for i, d in zip(points.run, points.D)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = estimator.fit(fit_N, fit_D, fit_L, params_column="params_avg" if sparse else "params",
                                labels=labels)
        if whole:
            fit.groups_ = np.concatenate([np.arange(len(N)), points.run])  # the bootstrap draws runs, not points
    except InsufficientRunsError as err:
        return {**base, "status": "insufficient_runs", "message": str(err), "suggestions": err.suggestions,
                "sentence": "Not enough runs to fit the law yet: " + _suggestion_sentence(err.suggestions, unit)}
    degenerate = list(getattr(fit, "degenerate_", None) or [])
    if any(d.get("refuses", True) for d in degenerate):
        refused = _refused(base, fit, [d for d in degenerate if d.get("refuses", True)], N, D, C, budget, unit)
        refused["n_runs"] = len(used)
        return refused
    boot = fit.bootstrap(n_bootstrap, seed=seed, confidence=confidence) if n_bootstrap else None
    out = {**base, **recommend(fit, budget, boot, C, points=(N, D, L)), "status": "ok"}
    column = {"params_column": "params_avg" if sparse else "params"}
    out["intervals"] = prediction_intervals(out, fit, factory, N, D, L, confidence, budget, column)
    out["backtest"] = backtest(factory, N, D, L, confidence=confidence, name=out.get("law"))
    if curve_bt is not None:
        out["backtest_curves"] = curve_bt
        data["params_interval"] = _params_intervals(out, whole, boot, factory, N, D, L, points, n_bootstrap, seed,
                                                    confidence, budget, column)
    data["used"] = "final losses and schedule-corrected checkpoints" if whole else "final losses"
    data["checkpoint_points"] = len(points) if whole else 0
    data["reason"] = why_not or ("use_curves='always'" if use_curves == "always" else
                                 "the whole-curve fit's backtest MAPE is below the final-only fit's")
    data["sentence"] = _data_sentence(data)
    out["data"] = data
    out["n_points"], out["n_runs"] = out.get("n_runs"), len(used)  # a run's checkpoints do not make it several runs
    if choice is not None:
        out["law_selection"] = {**choice, "predictions": _form_predictions(candidates, choice["chosen"], fit, out,
                                                                           N, D, L, column)}
    out["figures"] = figure_data(fit, C, budget)
    out["sentence"] = recommendation_sentence(out)  # in the runs' own unit of D
    out["boundary"] = list(out.get("boundary", [])) + _extrapolation(out["params"], N)
    if sparse or pruning:
        out["sparse_next"] = _sparse_next(out["params"], pruning)
    target_dense = out.get("sparse_next", {}).get("initial_params", out["params"])
    out["architecture"] = propose_architecture(target_dense, dict(hparams or {})) if propose_architecture else None
    out["sentence"] = _sentence(out)
    return out


def _params_intervals(out, whole, boot, factory, N, D, L, points, n_bootstrap, seed, confidence, budget,
                      column) -> dict:
    """The bootstrap interval on N_opt at the budget of the fit made and of the other one (final-only or
    whole-curve), to show what the checkpoints buy."""
    if not n_bootstrap:
        return {}
    other = factory()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if whole:
                other.fit(N, D, L, **column)
            else:
                other.fit(np.concatenate([N, points.N]), np.concatenate([D, points.D]),
                          np.concatenate([L, points.loss]), **column)
                other.groups_ = np.concatenate([np.arange(len(N)), points.run])
            other_boot = other.bootstrap(n_bootstrap, seed=seed, confidence=confidence)
            theirs = [float(v) for v in other_boot.allocation_intervals(budget)["params"]]
            ours = [float(v) for v in boot.allocation_intervals(budget)["params"]]
    except LightningScalingError:
        return {}
    final, curve = (theirs, ours) if whole else (ours, theirs)
    ratio = lambda iv: iv[1] / iv[0] if iv[0] > 0 else float("inf")  # noqa: E731
    return {"final_only": final, "whole_curve": curve, "final_only_ratio": ratio(final),
            "whole_curve_ratio": ratio(curve), "confidence": confidence, "flops": budget}


def _data_sentence(data: dict) -> str:
    s = f"fitted on {data['used']} ({data['final_points']} runs"
    if data["checkpoint_points"]:
        s += f", {data['checkpoint_points']} checkpoints"
    s += ")"
    mape = data.get("backtest_mape")
    if mape and mape["final_only"] is not None and mape["whole_curve"] is not None:
        s += (f"; backtest MAPE {mape['whole_curve']:.2f}% with checkpoints, {mape['final_only']:.2f}% from final "
              "losses alone")
    iv = data.get("params_interval") or {}
    if iv:
        s += (f"; N_opt interval spans {iv['whole_curve_ratio']:.2f}x with checkpoints, "
              f"{iv['final_only_ratio']:.2f}x without")
    if data["used"] == "final losses":
        s += f"; checkpoints not used: {data['reason']}"
    return s


INTERVAL_MEANING = {
    "calibrated": ("loss_low..loss_high: where a run trained at this N and D is expected to land, with probability "
                   "{pct}%. Calibrated on these runs by forward chaining over compute: fits on the smaller runs "
                   "predicted the larger ones, and the interval is scaled to cover {pct}% of those held-out errors, "
                   "growing with the distance extrapolated and with how far the law still moves. N and D: "
                   "bootstrap percentiles of the compute-optimal size, widened to where the last fits put it."),
    "scatter": ("loss_low..loss_high: the bootstrap interval of the mean law widened by the runs' scatter about it "
                "({pct}%, normal); NOT calibrated for extrapolation: too few runs above the smallest compute to "
                "measure the extrapolation error (fewer than {held} held out). Treat it as a lower bound on the "
                "uncertainty. N and D: bootstrap percentiles."),
}


def prediction_intervals(out: dict, fit, factory, N, D, L, confidence: float, budget: float, fit_kwargs: dict) -> dict:
    """Set ``loss_low``/``loss_high`` (and widen ``params``/``tokens`` intervals) in `out` from the calibrated
    prediction intervals (`evaluation.intervals`), or, with too few runs to calibrate, from the bootstrap widened by the
    runs' scatter; returns what was done, with the words saying what the interval means."""
    pct = int(round(100 * confidence))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cal = calibrate(factory, N, D, L, confidence, fit_kwargs=fit_kwargs, full_fit=fit)
    except LightningScalingError:
        cal = None
    if cal is not None and cal.calibrated:
        low, high = cal.interval(out["params"], out["tokens"])
        out["loss_low"], out["loss_high"] = float(low), float(high)
        with np.errstate(all="ignore"):
            spread = cal.allocation_spread(budget)
        for key in ("params", "tokens"):
            lo, hi = spread[key]
            out[f"{key}_low"] = min(out.get(f"{key}_low", lo), lo)
            out[f"{key}_high"] = max(out.get(f"{key}_high", hi), hi)
        out.setdefault("confidence", confidence)
        return {**cal.to_dict(), "loss": "calibrated", "meaning": INTERVAL_MEANING["calibrated"].format(pct=pct)}
    sigma = scatter(fit, N, D, L)
    low, high = widen_by_scatter(out.get("loss_low", out["loss"]), out.get("loss_high", out["loss"]), sigma,
                                 confidence)
    out["loss_low"], out["loss_high"] = float(low), float(high)
    out.setdefault("confidence", confidence)
    return {"method": "bootstrap of the mean law and the runs' scatter", "calibrated": False, "confidence": confidence,
            "sigma": sigma, "held_out": 0 if cal is None else cal.n_held_out, "loss": "bootstrap+scatter",
            "meaning": INTERVAL_MEANING["scatter"].format(pct=pct, held=MIN_HELD_OUT)}


def _form_predictions(forms: dict, chosen: str, chosen_fit, out: dict, N, D, L, fit_kwargs: dict) -> dict:
    """Each form's own compute-optimal run at the budget, and its loss at the recommended run."""
    predictions = {}
    for name, factory in forms.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = chosen_fit if name == chosen else factory().fit(N, D, L, **fit_kwargs)
                allocation = fit.compute_optimal(out["flops"])
        except LightningScalingError as err:
            predictions[name] = {"error": str(err)}
            continue
        predictions[name] = {"fitted": fit.to_dict().get("fitted"), "params": allocation.params,
                             "tokens": allocation.tokens, "loss": allocation.loss,
                             "loss_at_recommended": float(fit.predict(out["params"], out["tokens"]))}
    return predictions


def data_unit_of(records) -> str:
    """The unit D is counted in over these runs ("tokens", or "samples" for non-token models): one for all of them.

    Raises:
        ScalingDataError: runs count D in different units (they cannot share one law); the message names them.
    """
    by_unit: dict[str, list[str]] = {}
    for r in records:
        by_unit.setdefault(str(r.config.get(DATA_UNIT, "tokens")), []).append(r.run_name or r.run_id)
    if len(by_unit) > 1:
        listing = "; ".join(f"{unit}: {', '.join(names[:5])}" for unit, names in sorted(by_unit.items()))
        raise ScalingDataError(f"the runs count D in different units ({listing}): fit runs of one kind of model at a "
                               "time (a separate MLflow experiment per kind)")
    return next(iter(by_unit), "tokens")


EXTRAPOLATION_RATIO = 10.0  # a recommendation more than 10x outside the sizes trained is an extrapolation


def _extrapolation(params: float, N) -> list[str]:
    """A warning when the recommended size lies far outside the sizes the law was fitted on."""
    lo, hi = float(np.min(N)), float(np.max(N))
    if lo / EXTRAPOLATION_RATIO <= params <= hi * EXTRAPOLATION_RATIO:
        return []
    return [f"the recommended N = {format_count(params)} is more than {EXTRAPOLATION_RATIO:g}x outside the sizes "
            f"trained ({format_count(lo)}..{format_count(hi)}): the law is extrapolated; add runs at sizes between them "
            "(an isoFLOP group "
            "whose sizes bracket its best loss)"]


def _sparse_next(params_avg: float, pruning: dict | None) -> dict:
    p = {"final_sparsity": 0.5, "start_fraction": START_FRACTION, "end_fraction": END_FRACTION,
         "prunable_fraction": 1.0, **(pruning or {})}
    initial = initial_params_for_average(params_avg, p["final_sparsity"], p["start_fraction"], p["end_fraction"],
                                         p["prunable_fraction"])
    return {"initial_params": initial, "params_avg": params_avg, **p}


def _refused(base: dict, fit, degenerate: list[dict], N, D, C, budget: float, unit: str) -> dict:
    """The answer for a degenerate fit: the law as fitted, what is wrong, the runs to add; no allocation."""
    axes = sorted({d["axis"] for d in degenerate}, key=["N", "D", "compute"].index)
    which = ", ".join(f"{d['parameter']} " + ("on its bound" if d["kind"] == "bound" else "vanishing") for d in degenerate)
    suggestions = suggest_runs(N, D, 3, at_flops=4.0 * float(C.max()) if axes == ["compute"] else None)
    return {**base, **summarize_fit(fit, None, C), "status": "degenerate", "degenerate": degenerate,
            "message": " ".join(d["message"] + "." for d in degenerate), "suggestions": suggestions,
            "figures": figure_data(fit, C, budget),
            "sentence": (f"No run size is recommended: the fitted law is degenerate ({which}), so the runs do not "
                         f"pin it along {' and '.join(axes)}; {_suggestion_sentence(suggestions, unit)}")}


def _suggestion_sentence(suggestions: list[dict], unit: str = "tokens") -> str:
    return "add runs such as " + "; ".join(
        f"N={format_count(s['params'])} on D={format_count(s['tokens'])} {unit}" for s in suggestions) + "."


def _sentence(rec: dict) -> str:
    s = rec["sentence"].rstrip(".")
    if rec.get("sparse_next"):
        sp = rec["sparse_next"]
        s += (f"; as a sparse run, start from {format_count(sp['initial_params'])} parameters and prune to "
              f"{sp['final_sparsity']:.0%} between {sp['start_fraction']:.0%} and {sp['end_fraction']:.0%} of training")
    arch = rec.get("architecture")
    if arch:
        shape = ", ".join(f"{k}={v}" for k, v in arch.items() if k != "params")
        s += f" (e.g. {shape})"
    return s + "."
