"""Forecast the rest of a run's loss curve from its first part and the curves of other runs, with its interval.

The law is the annealing law fitted across runs (`curves.shared_fit`: a shape (alpha, lam) shared by the runs, each
run's own (L0, A, C)). A run is one or more curves (`Curve`: a main curve and its branches).

Forecasting a run from its first part (`forecast`):
1. the shape (alpha, lam) from the other runs' curves together with the observed part of this one;
2. this run's (L0, A, C) from its observed points; where its observed annealing area S2 is less than half of
   that at the end of the plan (a constant or WSD stable phase: S2 is 0; the start of a cosine), C is the median
   of the other runs' C instead: a C fitted on a small part of the area it is extrapolated to is unstable, and the
   other runs measured it over their whole decay;
3. the interval, split-conformal (Vovk et al. 2005; Lei et al. 2018; `evaluation.folds.conformal_quantile`): the
   same forecast made for each other run from the same fraction of its own curve, its relative error at the end of
   that curve, and the finite-sample quantiles of those errors around this run's point forecast. Between the last
   observed point and the end the band is scaled linearly with the distance from the last observed step. With too
   few other runs for the requested confidence, the interval is a residual bootstrap of this run's own fit, widened
   to cover the largest error of the other runs seen; the output says which method was used;
4. where the runs give their parameters and tokens, the final loss is also forecast by the scaling law across the
   other runs' final losses and the two forecasts are stacked, with the weight that fits the other runs' errors
   at the same fraction best (`curves.stacking`); the interval is then the conformal quantile of the stacked errors.

`Forecaster` fits the shape once on a pool of runs and forecasts often (a trainer's validations).

The multi-power law (Luo et al. 2025, "A Multi-Power Law for Loss Curve Prediction Across Learning Rate
Schedules") models each drop of the learning rate by its own saturating term and reports 0.1-0.2% mean error on
unseen schedules at 25M-400M parameters; the annealing law with a fitted lam is its one-term relative here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lightning_scaling.curves.annealing import AnnealingLaw
from lightning_scaling.curves.shared_fit import (
    Curve,
    SharedCurveFit,
    by_run,
    fit_shared,
    measures_C,
    nnls_coefficients,
    observations,
)
from lightning_scaling.curves.stacking import final_law, stack
from lightning_scaling.errors import ScalingDataError
from lightning_scaling.evaluation.folds import conformal_quantile
from lightning_scaling.options import check_confidence

MIN_OBSERVED = 2  # points of the run itself below which no forecast is made
MIN_ALONE = 5  # ... and without other runs, whose curves give the shape
SAME_FRACTION = 0.02  # another run's points up to 2% past the run's fraction count as seen at the same fraction:
# runs validated at the same fractions of their length log them a step or two apart
BOOTSTRAP = 200


@dataclass
class Forecast:
    """The forecast of a run's planned points: loss with its interval at each planned step."""

    run: str
    steps: np.ndarray
    tokens: np.ndarray | None
    loss: np.ndarray
    low: np.ndarray
    high: np.ndarray
    confidence: float
    method: str  # "conformal over N runs" | "bootstrap of the run's own fit"
    law: AnnealingLaw
    c_borrowed: bool
    progress: float  # last observed step / final planned step
    fit: SharedCurveFit | None = None
    notes: list = field(default_factory=list)
    across: object = None  # `curves.stacking.Stack`: the final loss stacked with the law across runs (None: not)

    @property
    def final(self) -> tuple[float, float, float]:
        return float(self.loss[-1]), float(self.low[-1]), float(self.high[-1])

    def to_dict(self) -> dict:
        rows = []
        for i, s in enumerate(self.steps):
            row = {"step": int(s)}
            if self.tokens is not None:
                row["tokens"] = float(self.tokens[i])
            row.update(loss=float(self.loss[i]), loss_low=float(self.low[i]), loss_high=float(self.high[i]))
            rows.append(row)
        return {"run": self.run, "confidence": self.confidence, "method": self.method, "progress": self.progress,
                "law": self.law.to_dict(), "C_from_other_runs": self.c_borrowed, "notes": list(self.notes),
                "law_across_runs": self.across.to_dict() if self.across is not None else None, "forecast": rows}


def _run_forecast(target: list[Curve], shape: SharedCurveFit, pool_C: float | None):
    """Point forecast of the run's curves at fixed shape: (coefficients, C borrowed?, C measured?)."""
    S1, S2, L, planned = observations(target, shape.momentum)
    if len(L) < MIN_OBSERVED:
        raise ScalingDataError(f"run {target[0].run!r} has {len(L)} observed point(s); a forecast needs at least "
                               f"{MIN_OBSERVED}")
    measured = measures_C(S2, planned)
    borrow = not measured and pool_C is not None
    C = None if measured else (pool_C if borrow else 0.0)  # unmeasured, nothing to borrow: the gain left out
    coef, _ = nnls_coefficients(S1, S2, L, shape.alpha, C)
    return coef, borrow, measured


def _predict(curve: Curve, shape: SharedCurveFit, coef) -> np.ndarray:
    S1, S2 = curve.areas(shape.momentum)
    law = AnnealingLaw(float(coef[0]), float(coef[1]), float(coef[2]), shape.alpha, shape.momentum)
    return law.loss(S1, S2)


def _progress(curves: list[Curve]) -> tuple[float, float]:
    """(last observed step, final planned step) of a run: over its curves."""
    last = max((float(c.steps[c.observed][-1]) for c in curves if c.observed.any()), default=0.0)
    return last, max(c.final_step for c in curves)


def forecast(target, pool=(), confidence: float = 0.8, momentum: float | None = None, seed: int = 0) -> Forecast:
    """Forecast the planned (empty-loss) points of a run from its observed part and other runs' curves; the shape
    (alpha, momentum) is fitted on both (see `Forecaster` to fit it once on the other runs and forecast often).

    Args:
        target: the run's curve (or curves: a main curve and branches), `loss` NaN where planned.
        pool: curves of other runs (complete or not), which give the shape and calibrate the interval.
        confidence: of the interval, in (0, 1).
        momentum: the annealing momentum, fitted when None.
    """
    target = _target(target)
    pool = [c for c in pool if c.run != target[0].run]
    if not any(c.observed.any() for c in pool):
        _check_alone(target)
    shape = fit_shared([*pool, *target], momentum=momentum)
    return Forecaster(pool, confidence=confidence, shape=shape).forecast(target, seed=seed)


def _check_alone(target: list[Curve]) -> None:
    seen = sum(int(c.observed.sum()) for c in target)
    if seen < MIN_ALONE:
        raise ScalingDataError(f"run {target[0].run!r} has {seen} observed point(s); without other runs a forecast "
                               f"needs at least {MIN_ALONE} (the law has four parameters)")


def _target(target) -> list[Curve]:
    target = [target] if isinstance(target, Curve) else list(target)
    if not target or len({c.run for c in target}) != 1:
        raise ScalingDataError("the target must be one run's curves")
    return target


class Forecaster:
    """Forecasts of runs from the curves of other runs (`pool`), the shape fitted once (module docstring).

    A forecast then costs one small least-squares solve per run of the pool (the conformal errors) and one for
    the run, so a trainer can forecast at every validation (its cost: benchmarks/README.md).

    Args:
        pool: curves of other runs; without any, each run's shape comes from its own curve alone.
        confidence: of the intervals, in (0, 1).
        momentum: the annealing momentum, fitted when None.
        shape: a fit already made (`fit_shared`) to use instead of fitting the pool.
    """

    def __init__(self, pool=(), confidence: float = 0.8, momentum: float | None = None,
                 shape: SharedCurveFit | None = None):
        self.confidence = check_confidence(confidence)
        self.momentum = momentum
        self.pool = list(pool)
        self.pool_runs = by_run(self.pool)
        if shape is None and any(c.observed.any() for c in self.pool):
            shape = fit_shared(self.pool, momentum=momentum)
        self.shape = shape
        self._laws: dict = {}  # the law across runs' final losses, by the runs' ends it was fitted on
        if self.pool_runs and all(len(cs) == 1 for cs in self.pool_runs.values()):
            self._final_law(self.pool[0])  # one curve per run: the same law for every target, fitted now

    def forecast(self, target, seed: int = 0) -> Forecast:
        """The forecast of `target`'s planned points (`forecast`)."""
        target = _target(target)
        run = target[0].run
        main = max(target, key=lambda c: c.final_step)
        seen = main.steps[main.observed]
        planned = ~main.observed & (main.steps > (float(seen[-1]) if len(seen) else 0.0))
        if not planned.any():
            raise ScalingDataError(f"run {run!r} has no planned point (a row with an empty loss after the last "
                                   "observed one) to forecast")
        if not any(c.observed.any() for c in self.pool):
            _check_alone(target)
        shape = self.shape if self.shape is not None else fit_shared(target, momentum=self.momentum)
        others = [r for r in self.pool_runs if r != run and r in shape.coefficients]
        measured_C = [float(shape.coefficients[r][2]) for r in others if shape.c_measured.get(r)]
        pool_C = float(np.median(measured_C)) if measured_C else None
        coef, borrowed, measured = _run_forecast(target, shape, pool_C)
        point = _predict(main, shape, coef)[planned]
        last, final = _progress(target)
        progress = last / final
        notes = []
        if borrowed:
            notes.append(f"the learning rate has not fallen far enough yet to measure the decay's gain: C = "
                         f"{coef[2]:.4g} is the median over {len(measured_C)} other run(s)")
        elif not measured and coef[2] == 0.0:
            notes.append("the learning rate has not fallen far enough yet to measure the decay's gain and no other "
                         "run measured it: the forecast leaves the planned decay's gain out (it is an upper bound)")
        curve_errors, seen = self._errors(others, shape, main, progress)
        steps = main.steps[planned]
        scale = np.clip((steps - last) / max(final - last, 1.0), 0.0, 1.0)
        stacked = self._stack(target, main, float(point[-1]), curve_errors, seen)
        errors, curve_point = list(curve_errors.values()), point
        if stacked is not None:
            notes.append(stacked.note)
            errors = stacked.errors
            # the planned curve bends from the run's own forecast near its last point to the stacked final loss
            point = point * (stacked.loss / float(point[-1])) ** scale
        S1, S2 = main.areas(shape.momentum)
        fixed_C = None if coef[2] == 0 or pool_C is None else coef[2]
        lower, upper, method = self._band(errors, lambda: _bootstrap_band(
            target, shape, coef, fixed_C, (S1[planned][-1], S2[planned][-1]), float(curve_point[-1]),
            self.confidence, seed))
        low = point * (1.0 + min(lower, 0.0) * scale)
        high = point * (1.0 + max(upper, 0.0) * scale)
        law = AnnealingLaw(float(coef[0]), float(coef[1]), float(coef[2]), shape.alpha, shape.momentum)
        tokens = None if main.tokens is None else np.asarray(main.tokens)[planned]
        return Forecast(run=run, steps=steps, tokens=tokens, loss=point, low=low, high=high,
                        confidence=self.confidence, method=method, law=law, c_borrowed=borrowed, progress=progress,
                        fit=shape, notes=notes, across=stacked)

    def _band(self, errors: list, bootstrap) -> tuple[float, float, str]:
        """(lower, upper) relative error of the final forecast, and the method: the conformal quantiles of the other
        runs' `errors`, or, with too few of them for the confidence, `bootstrap()` widened to cover them."""
        level = (1.0 + self.confidence) / 2.0
        upper = conformal_quantile(errors, level)
        if math.isfinite(upper):
            return -conformal_quantile([-e for e in errors], level), upper, f"conformal over {len(errors)} other runs"
        lower, upper = bootstrap()
        if not errors:
            return lower, upper, "bootstrap of the run's own fit"
        return (min(lower, min(errors)), max(upper, max(errors)),
                f"bootstrap of the run's own fit, widened to the errors of {len(errors)} other run(s)")

    def _errors(self, others, shape, main, progress) -> tuple[dict[str, float], dict[str, float]]:
        """Run -> relative error (final / forecast - 1) of the same procedure on the other runs, from the same
        fraction of their curves (each borrows C from the rest when its own part does not measure it, as the run
        forecast does); and run -> log(its last loss seen by then / its final loss)."""
        errors, seen = {}, {}
        for r in others:
            end, hidden = self._at_fraction(r, main, progress)
            if end is None:
                continue
            rest_C = [float(shape.coefficients[q][2]) for q in others if q != r and shape.c_measured.get(q)]
            try:
                coef_r, *_ = _run_forecast(hidden, shape, float(np.median(rest_C)) if rest_C else None)
            except ScalingDataError:
                continue
            pred = float(_predict(end, shape, coef_r)[-1])
            errors[r] = float(end.loss[-1]) / pred - 1.0
            seen[r] = math.log(_last_seen(hidden) / float(end.loss[-1]))
        return errors, seen

    def _at_fraction(self, run: str, main: Curve, progress: float):
        """(the other run's curve most like `main`, its curves as seen at the same fraction `progress` of that
        curve), or (None, None) when it has no such curve or too few points by then."""
        end = self._end(run, main)
        if end is None:
            return None, None
        cut = min(progress * (1.0 + SAME_FRACTION), 1.0) * end.final_step
        if cut >= end.final_step:
            return None, None
        hidden = [c.until(cut) for c in self.pool_runs[run]]
        if sum(int(c.observed.sum()) for c in hidden) < MIN_OBSERVED:
            return None, None
        return end, hidden

    def _end(self, run: str, main: Curve) -> Curve | None:
        """The curve of another run most like the target's `main`: observed to its end and nearest in length (a
        main curve for a main curve, a branch for a branch), the longer on a tie."""
        ends = [c for c in self.pool_runs[run] if c.observed[-1]]
        if not ends:
            return None
        return min(ends, key=lambda c: (abs(math.log(c.final_step / main.final_step)), -c.final_step))

    def _stack(self, target, main: Curve, curve_loss: float, curve_errors: dict, seen: dict):
        """The law across the other runs' final losses stacked with the curve's forecast (`curves.stacking`), when the
        run and at least `across.MIN_RUNS` other runs give their parameters and tokens (`seen`: run -> log(last loss
        seen at the same fraction / final loss), from `_errors`)."""
        N = next((c.params for c in target if c.params is not None), None)
        D = main.final_tokens
        if N is None or not (math.isfinite(D) and D > 0) or len(curve_errors) < 1:
            return None
        law = self._final_law(main)
        if law is None:
            return None
        law_loss = law.loss(float(N), D)
        # log(last loss seen / the law's forecast of the final loss), each run at the same fraction
        levels = {r: seen[r] + law.errors[r] for r in seen if r in law.errors}
        return stack(law_loss, curve_loss, law.errors, curve_errors, levels,
                     math.log(_last_seen(target) / law_loss))

    def _final_law(self, main: Curve):
        """The law over the other runs' final losses, each run's end the curve most like `main` (`_end`); fitted
        once per choice of ends."""
        ends = {}
        for r in self.pool_runs:
            end = self._end(r, main)
            params = next((c.params for c in self.pool_runs[r] if c.params is not None), None)
            if end is not None and params is not None:
                ends[r] = (float(params), end.final_tokens, float(end.loss[-1]))
        key = tuple(sorted(ends.items()))
        if key not in self._laws:
            self._laws[key] = final_law(ends)
        return self._laws[key]


def _last_seen(curves: list[Curve]) -> float:
    """The loss at the last observed step of a run's curves."""
    return max((float(c.steps[c.observed][-1]), float(c.loss[c.observed][-1])) for c in curves if c.observed.any())[1]


def _bootstrap_band(target, shape, coef, fixed_C, end_areas, end_loss, confidence, seed):
    """Relative band of the final forecast from resampled residuals of the run's own observed points around its
    fitted coefficients `coef` (refitted at the fitted shape for each replicate, C held at `fixed_C` unless None);
    `end_areas` are (S1, S2) at the last planned step, `end_loss` the curve's forecast there."""
    S1, S2, L, _ = observations(target, shape.momentum)
    fitted = coef[0] + coef[1] * S1 ** -shape.alpha - coef[2] * S2
    rel = L / fitted - 1.0
    rng = np.random.default_rng(seed)
    s1, s2 = end_areas
    finals = []
    for _ in range(BOOTSTRAP):
        Lb = fitted * (1.0 + rng.choice(rel, size=len(rel), replace=True))
        cb, _ = nnls_coefficients(S1, S2, Lb, shape.alpha, fixed_C)
        finals.append(cb[0] + cb[1] * s1 ** -shape.alpha - cb[2] * s2)
    finals = np.asarray(finals) / end_loss - 1.0
    spread = np.std(rel, ddof=1) if len(rel) > 1 else 0.0
    z = _normal_quantile((1.0 + confidence) / 2.0)
    lower = float(np.quantile(finals, (1.0 - confidence) / 2.0)) - z * spread
    upper = float(np.quantile(finals, (1.0 + confidence) / 2.0)) + z * spread
    return lower, upper


def _normal_quantile(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))
