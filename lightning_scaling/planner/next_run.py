"""Plan the next run from the runs logged so far: the answer to "what next?", without Lightning or MLflow.

`advise` takes the runs (`planner.inputs.Runs`: a CSV table or the store's `Selection`) and returns an `Advice`
(`planner.results`): the law form chosen by forward-chaining error among those given (`evaluation.backtest`), fitted
on the final losses or also on the runs' schedule-corrected checkpoints (`planner.data_choice`), with bootstrap
intervals; the compute-optimal next run for the budget (an explicit `next_flops`, or `growth` times the largest
compute logged so far, as C = 6ND) with calibrated prediction intervals (`planner.uncertainty`); the backtest; the
initial dense size of a sparse next run whose N_avg is the optimum under the pruning schedule (Jin et al. 2025); the
learning-rate and muP settings to reuse; a concrete architecture (from the `propose_architecture` plugin hook,
passed in as a function); the runs used and left out; and one sentence saying what to run next. With too few runs it
answers `status: "insufficient_runs"` and the runs to add instead; with a degenerate fit (an exponent on its bound,
or a term that carries no signal: the ``refuses`` entries of the law form's `degenerate_`; E at 0 is flagged in
``boundary`` but does not refuse) `status: "degenerate"`, the fitted law and its figures, which axis lacks spread,
and the runs to add, but no run size.

`plan_next_run(selection, **options)` is the same for the store's `Selection`, as the plain dict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from lightning_scaling.errors import InsufficientRunsError
from lightning_scaling.evaluation.backtest import backtest
from lightning_scaling.law.fit import ChinchillaFit
from lightning_scaling.law.form import check_law_form, fit_runs, quietly, shared_fits
from lightning_scaling.planner.data_choice import DataChoice, choose_data
from lightning_scaling.planner.inputs import Runs
from lightning_scaling.planner.options import FitOptions, NextRunOptions, split_options
from lightning_scaling.planner.predict import select_law
from lightning_scaling.planner.recommendation import figure_data, law_summary, next_run
from lightning_scaling.planner.report import (
    data_sentence,
    next_run_sentence,
    recommendation_sentence,
    suggestion_sentence,
)
from lightning_scaling.planner.results import Advice, DataUsed, SparseNext
from lightning_scaling.planner.uncertainty import fit_kwargs, form_predictions, params_intervals, prediction_intervals
from lightning_scaling.planner.wording import format_count
from lightning_scaling.runs.records import Selection
from lightning_scaling.runs.validation import suggest_runs
from lightning_scaling.schedules.sparsity import END_FRACTION, START_FRACTION, initial_params_for_average

EXTRAPOLATION_RATIO = 10.0  # a recommendation more than 10x outside the sizes trained is an extrapolation
DEFAULT_FORMS = {"chinchilla": ChinchillaFit}  # without forms given: Chinchilla's law (Hoffmann et al. 2022)


def plan_next_run(selection: Selection, *, curves: list | None = None, forms: dict | None = None, **options) -> dict:
    """`advise` for the store's runs, as the plain dict (``recommendation.json``).

    Args:
        selection: usable runs and the excluded ones with reasons (`records.select_runs`).
        curves: the runs' loss curves (the store's `curves(..., dense_lr=True)`).
        forms: the law forms to choose among (``law_forms`` is the same; ``law_factory``, one form).
        options: fields of `FitOptions` and `NextRunOptions`, and `advise`'s ``settings``, ``hparams`` and
            ``propose_architecture``.
    """
    context = {key: options.pop(key) for key in ("settings", "hparams", "propose_architecture") if key in options}
    forms = options.pop("law_forms", forms)
    factory = options.pop("law_factory", None)
    if forms is None and factory is not None:
        forms = {getattr(factory, "law_name", "chinchilla"): factory}
    fit_values, run_values = split_options(options, FitOptions, NextRunOptions)
    return advise(Runs.from_selection(selection, curves), FitOptions(**fit_values), NextRunOptions(**run_values),
                  forms=forms, **context).to_dict()


def advise(runs: Runs, fit_options: FitOptions | None = None, run_options: NextRunOptions | None = None, *,
           forms: dict[str, Callable] | None = None, settings: dict | None = None, hparams: dict | None = None,
           propose_architecture: Callable[[float, dict], dict | None] | None = None) -> Advice:
    """The recommendation for the next run (module docstring).

    Args:
        runs: the runs (`Runs.from_table`, `Runs.from_selection`, `inputs.read_runs`).
        fit_options: how the law is fitted (`FitOptions`: bootstrap, seed, confidence, law, use_curves).
        run_options: the next run's compute budget and pruning (`NextRunOptions`).
        forms: the law forms to choose among by forward-chaining error (forms needing per-run extras the runs do not
            carry are left out; "chinchilla", when present, is the baseline); default Chinchilla's alone.
        settings: learning-rate and muP settings to reuse (passed through).
        hparams: the hyperparameters of the run just finished (for the architecture proposal).
        propose_architecture: `f(params, hparams) -> dict | None`.
    """
    with shared_fits():  # the calibration, backtest and choice of form refit the same prefixes: fit each once
        advice = _advise(runs, fit_options or FitOptions(), run_options or NextRunOptions(), forms or DEFAULT_FORMS,
                         settings or {})
        if advice.status != "ok":
            return advice
        target = advice.sparse_next.initial_params if advice.sparse_next else advice.next_run.params
        architecture = propose_architecture(target, dict(hparams or {})) if propose_architecture else None
        return _with_sentence(replace(advice, architecture=architecture))


def _budget(runs: Runs, options: NextRunOptions) -> tuple[float | None, str | None]:
    """The next run's compute and the rule that gave it. The law's compute is C = 6ND (Hoffmann et al. 2022), the
    C the allocation spends; the budget rule and the isoFLOP groups use it too, so "4x the largest compute" is 4x in
    the units of the recommendation (the measured FLOPs count attention and embeddings as well, which for small
    models is noticeably more)."""
    largest = float(runs.C.max()) if len(runs) else None
    if options.next_flops is not None:
        return options.next_flops, f"explicit next_flops = {options.next_flops:.3g}"
    if largest:
        return options.growth * largest, f"{options.growth:g}x the largest compute logged ({largest:.3g} FLOPs as 6ND)"
    return None, None


def _fit(runs: Runs, factory, data: DataChoice):
    """The law on the final losses (shared with every other fit of them) or with the checkpoints (the bootstrap
    then draws runs, not points)."""
    if not data.whole:
        return fit_runs(factory, runs.N, runs.D, runs.L, extra=runs.extra, quiet=True, **fit_kwargs(runs))
    points = data.points
    N, D, L = (np.concatenate([x, y]) for x, y in ((runs.N, points.N), (runs.D, points.D), (runs.L, points.loss)))
    labels = list(runs.labels) + [f"checkpoint at {d:.3g} of {runs.labels[i]}" for i, d in zip(points.run, points.D)]
    fit = quietly(factory()).fit(N, D, L, params_column=runs.params_column, labels=labels)
    fit.groups_ = np.concatenate([np.arange(len(runs)), points.run])
    return fit


def _advise(runs: Runs, options: FitOptions, next_options: NextRunOptions, forms: dict, settings: dict) -> Advice:
    budget, rule = _budget(runs, next_options)
    base = {"runs": runs.runs_dict(), "n_runs": len(runs), "data_unit": runs.data_unit, "budget_rule": rule,
            "settings": settings}
    _, factory, choice = select_law(forms, options.law, runs.N, runs.D, runs.L, runs.extra, runs.budgets)
    check_law_form(factory())
    data = choose_data(runs, factory, options.use_curves, options.confidence)
    try:
        fit = _fit(runs, factory, data)
    except InsufficientRunsError as err:
        return Advice(status="insufficient_runs", message=str(err), suggestions=err.suggestions,
                      sentence="Not enough runs to fit the law yet: " + suggestion_sentence(err.suggestions,
                                                                                          runs.data_unit), **base)
    refusing = [d for d in getattr(fit, "degenerate_", None) or [] if d.get("refuses", True)]
    if refusing:
        return _refused(base, fit, refusing, runs, budget)
    boot = fit.bootstrap(options.n_bootstrap, seed=options.seed, confidence=options.confidence) \
        if options.n_bootstrap else None
    law = law_summary(fit, boot, runs.C, points=(runs.N, runs.D, runs.L))
    run, intervals = prediction_intervals(next_run(fit, budget, boot), fit, factory, runs, options.confidence, budget)
    selection = None
    if choice is not None:
        candidates = {k: forms[k] for k in choice["forms"]}
        selection = {**choice, "predictions": form_predictions(candidates, choice["chosen"], fit, run, runs)}
    sparse = _sparse_next(run.params, next_options.pruning) if runs.sparse or next_options.pruning else None
    return Advice(status="ok", sentence="", law=law, next_run=run, confidence=options.confidence,
                  intervals=intervals, law_selection=selection, sparse_next=sparse,
                  backtest=backtest(factory, runs.N, runs.D, runs.L, confidence=options.confidence, extra=runs.extra,
                                    name=law.law.get("law"), budgets=runs.budgets),
                  backtest_curves=data.curve_backtest, data=_data_used(runs, factory, data, boot, options, budget),
                  n_points=law.law.get("n_runs"), figures=figure_data(fit, runs.C, budget),
                  boundary=tuple(law.law.get("boundary", [])) + tuple(_extrapolation(run.params, runs.N)), **base)


def _data_used(runs: Runs, factory, data: DataChoice, boot, options: FitOptions, budget: float) -> DataUsed:
    used = "final losses and schedule-corrected checkpoints" if data.whole else "final losses"
    reason = data.why_not or ("use_curves='always'" if options.use_curves == "always" else
                              "the whole-curve fit's backtest MAPE is below the final-only fit's")
    extra = {}
    if data.points is not None:
        mape = {"final_only": data.final_backtest["mape"], "whole_curve": data.curve_backtest["mape"]}
        extra = {"checkpoints": data.points.to_dict(), "backtest_mape": mape,
                 "params_interval": params_intervals(runs, factory, data.points, data.whole, boot, options, budget)}
    out = DataUsed(used=used, final_points=len(runs), checkpoint_points=len(data.points) if data.whole else 0,
                   reason=reason, **extra)
    return replace(out, sentence=data_sentence(out.to_dict()))


def _with_sentence(advice: Advice) -> Advice:
    """The sentence saying what to run next, in the runs' own unit of D, with the sparse run and architecture."""
    rec = advice.to_dict()
    rec["sentence"] = recommendation_sentence(rec)
    return replace(advice, sentence=next_run_sentence(rec))


def _extrapolation(params: float, N) -> list[str]:
    """A warning when the recommended size lies far outside the sizes the law was fitted on."""
    lo, hi = float(np.min(N)), float(np.max(N))
    if lo / EXTRAPOLATION_RATIO <= params <= hi * EXTRAPOLATION_RATIO:
        return []
    return [f"the recommended N = {format_count(params)} is more than {EXTRAPOLATION_RATIO:g}x outside the sizes "
            f"trained ({format_count(lo)}..{format_count(hi)}): the law is extrapolated; add runs at sizes between "
            "them (an isoFLOP group whose sizes bracket its best loss)"]


def _sparse_next(params_avg: float, pruning: dict | None) -> SparseNext:
    p = {"final_sparsity": 0.5, "start_fraction": START_FRACTION, "end_fraction": END_FRACTION,
         "prunable_fraction": 1.0, **(pruning or {})}
    initial = initial_params_for_average(params_avg, p["final_sparsity"], p["start_fraction"], p["end_fraction"],
                                         p["prunable_fraction"])
    return SparseNext(initial_params=initial, params_avg=params_avg, **p)


def _refused(base: dict, fit, degenerate: list[dict], runs: Runs, budget: float) -> Advice:
    """The answer for a degenerate fit: the law as fitted, what is wrong, the runs to add; no allocation."""
    axes = sorted({d["axis"] for d in degenerate}, key=["N", "D", "compute"].index)
    which = ", ".join(f"{d['parameter']} " + ("on its bound" if d["kind"] == "bound" else "vanishing")
                      for d in degenerate)
    C = runs.C
    suggestions = suggest_runs(runs.N, runs.D, 3, at_flops=4.0 * float(C.max()) if axes == ["compute"] else None)
    return Advice(status="degenerate", law=law_summary(fit, None, C), degenerate=degenerate,
                  message=" ".join(d["message"] + "." for d in degenerate), suggestions=suggestions,
                  figures=figure_data(fit, C, budget),
                  sentence=(f"No run size is recommended: the fitted law is degenerate ({which}), so the runs do not "
                            f"pin it along {' and '.join(axes)}; {suggestion_sentence(suggestions, runs.data_unit)}"),
                  **base)
