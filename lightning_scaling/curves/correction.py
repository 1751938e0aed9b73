"""Every validation point of a run as a point of the law in (N, D): checkpoints corrected for the schedule.

A run of T steps logs its loss at checkpoints k < T too, but L(k) is not the final loss of a run of k steps: the
run planned for T steps had not yet annealed its learning rate at k (a WSD or Power run is still in its stable
phase; a cosine run is at a higher learning rate than a cosine of length k would be at its end). Read as final
losses, checkpoints would lie above the law and bias beta low. The correction comes from the run's own whole-curve
law (`curves.shared_fit.fit_shared`: the annealing law of Tissue et al. 2024 with shared alpha and momentum and the
run's own L0, A, C):

    L*(N, D_k) = L(k) + [law(S1*, S2*) - law(S1(k), S2(k))]

with (S1(k), S2(k)) the areas of the schedule the run actually followed up to k and (S1*, S2*) those of the same
schedule *planned for k steps* (`planned_for`), by one of two rules (`plan_rule`):

- "decay": when the learning rate before the decay does not depend on the run's length (the Power schedule, an
  inverse square root, WSD's stable phase): followed unchanged up to the decay start (1 - f) k, then the run's own
  decay compressed in time to the last f k steps, started from the learning rate reached at (1 - f) k. The decay
  fraction f is the run's `scaling/power_decay_fraction` when `PowerLR` logged it; otherwise the decay is the
  trailing part where the learning rate falls faster than 1/step (a log-log slope below -1), and the rule applies
  when the part between the warmup's peak and that decay is constant or a power law in the step (its log-log
  slope the same, within `POWER_LAW_SLOPE_TOLERANCE`, over its middle and last thirds);
- "stretch": otherwise (cosine, a linear decay from the peak: schedules defined in fractions of the run): the
  warmup kept, the rest of the schedule compressed in time from T - peak to k - peak steps.

For a constant schedule the correction is 0; at the run's last step the planned schedule is the actual one and the
correction is 0 too, so the final losses are used unchanged.

The annealing law is the law of one model under any schedule (Tissue et al. 2024 fit one (L0, A, C) per model and
predict its other schedules with them), so runs of one model (`model_key`: the same N, peak learning rate and
tokens per step, differing only in length or schedule) share (L0, A, C). That is what measures C: a short run's
final decay and a longer run's stable phase at the same step differ by the annealing gain, while one run alone
has a single decay at its end, often one or two validations, which the fit can also explain by A and alpha (a run
fitted alone may get no annealing gain at all; benchmarks/README.md, "Final losses against whole curves").

The tokens of a checkpoint are D_T k / T (a fixed number of tokens per step). Checkpoints before `FROM_FRACTION`
of the run are left out: the warmup and the first transient are what the law in (N, D) does not describe.
The law in (N, D) is fitted on checkpoints only where the final losses anchor it (`CheckpointPoints.within`):
inside the convex hull of the final losses' (log N, log D). Checkpoints densify the law where runs ended; a
checkpoint at fewer tokens than any run of its size was planned for would extend the law to early training,
where the loss need not follow E + A/N^alpha + B/D^beta, with nothing to check the correction against.
A run's checkpoints are not independent of each other nor of its final loss: the bootstrap resamples runs
(`law.bootstrap`, clusters), not points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from lightning_scaling.curves.annealing import schedule_areas
from lightning_scaling.curves.shared_fit import Curve, fit_shared
from lightning_scaling.errors import ScalingDataError
from lightning_scaling.evaluation.folds import inside_hull

FROM_FRACTION = 0.25  # checkpoints from a quarter of the run on
DECAY_SLOPE = -1.0  # the decay phase: the learning rate falls faster than 1/step
POWER_LAW_SLOPE_TOLERANCE = 0.2  # log-log slopes of the last two thirds before the decay within this: a power law
CONSTANT_TOLERANCE = 0.05  # ... or the learning rate within 5% of its peak: constant


def decay_start(steps, lr, decay_fraction: float | None = None) -> float:
    """The step at which the run's final decay starts (module docstring); the last step when it has none."""
    steps, lr = np.asarray(steps, float), np.asarray(lr, float)
    T = float(steps[-1])
    if decay_fraction is not None and math.isfinite(decay_fraction) and 0.0 <= decay_fraction <= 1.0:
        return T * (1.0 - float(decay_fraction))
    i = len(steps) - 1
    while i > 0:
        a, b = lr[i - 1], lr[i]
        if a <= 0:
            break
        if b > 0 and math.log(b / a) / math.log(steps[i] / steps[i - 1]) >= DECAY_SLOPE:
            break
        i -= 1
    return float(steps[i])


def dense_lr(steps, lr) -> np.ndarray:
    """The learning rate at every optimizer step 1..T from its value at logged `steps` (as `schedule_areas`
    interpolates it)."""
    steps, lr = np.asarray(steps, float), np.asarray(lr, float)
    every = np.arange(1, int(steps[-1]) + 1, dtype=float)
    eta = np.interp(every, steps, lr)
    if len(steps) > 1 and steps[0] > 1:
        slope = (lr[1] - lr[0]) / (steps[1] - steps[0])
        head = every < steps[0]
        eta[head] = np.maximum(lr[0] + slope * (every[head] - steps[0]), 0.0)
    return eta


def plan_rule(steps, lr, decay_fraction: float | None = None) -> tuple[str, float]:
    """("decay", the decay's start step) or ("stretch", the warmup's peak step): how this schedule is planned for
    fewer steps (module docstring)."""
    steps, lr = np.asarray(steps, float), np.asarray(lr, float)
    start = decay_start(steps, lr, decay_fraction)
    if decay_fraction is not None:
        return "decay", start
    peak = int(np.argmax(lr))
    stable = (steps >= steps[peak]) & (steps <= start) & (lr > 0)
    s, v = steps[stable], lr[stable]
    if len(s) < 5 or float(v.min()) >= (1.0 - CONSTANT_TOLERANCE) * float(v.max()):
        return "decay", start
    third = len(s) // 3  # the middle and last thirds (the first may hold a cap, as the Power schedule's lr_max)
    slopes = [np.polyfit(np.log(s[a:b]), np.log(v[a:b]), 1)[0] for a, b in ((third, 2 * third + 1),
                                                                           (2 * third, len(s)))]
    if abs(slopes[0] - slopes[1]) <= POWER_LAW_SLOPE_TOLERANCE:
        return "decay", start
    return "stretch", float(steps[peak])


def planned_for(eta: np.ndarray, k: int, rule: tuple[str, float]) -> np.ndarray:
    """The learning rate at steps 1..k of the schedule `eta` (steps 1..T) planned to end at step k, by `rule`
    (`plan_rule`; module docstring)."""
    T = len(eta)
    kind, start = rule
    if k >= T or start >= T:
        return eta[:k].copy()
    if kind == "stretch":
        out = eta[:k].copy()
        if k <= start:
            return out
        j = np.arange(1, k + 1, dtype=float)
        after = j > start
        at = start + (j[after] - start) * (T - start) / (k - start)
        out[after] = np.interp(at, np.arange(1, T + 1, dtype=float), eta)
        return out
    cut = start * k / T  # the decay of the shorter plan starts here
    j = np.arange(1, k + 1, dtype=float)
    steps = np.arange(1, T + 1, dtype=float)
    level = float(np.interp(cut, steps, eta))
    top = float(np.interp(start, steps, eta))
    out = eta[:k].copy()
    tail = j > cut
    if top <= 0 or k <= cut:
        return out
    progress = (j[tail] - cut) / (k - cut)
    out[tail] = level * np.interp(start + progress * (T - start), steps, eta) / top
    return out


@dataclass
class CheckpointPoints:
    """Schedule-corrected checkpoints: `run` is the index of the run (into the final points) each belongs to."""

    run: np.ndarray
    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    measured: np.ndarray  # the loss as logged
    alpha: float = math.nan
    momentum: float = math.nan
    runs_with_curves: int = 0
    skipped: dict = field(default_factory=dict)  # run name -> why its curve was not used
    models: int = 0  # groups of runs sharing the annealing law's (L0, A, C) (`model_key`)
    outside: int = 0  # checkpoints left out by `within`: outside the final losses' hull

    def __len__(self) -> int:
        return len(self.run)

    def within(self, N, D) -> CheckpointPoints:
        """The checkpoints inside the convex hull of the final losses' (log N, log D) (module docstring)."""
        keep = inside_hull(N, D, self.N, self.D)
        return replace(self, run=self.run[keep], N=self.N[keep], D=self.D[keep], loss=self.loss[keep],
                       measured=self.measured[keep], outside=self.outside + int((~keep).sum()))

    def to_dict(self) -> dict:
        correction = self.loss - self.measured
        return {"points": len(self), "runs_with_curves": self.runs_with_curves, "from_fraction": FROM_FRACTION,
                "curve_law": {"alpha": self.alpha, "momentum": self.momentum, "models": self.models},
                "outside_final_losses": self.outside,
                "median_correction": float(np.median(correction)) if len(self) else None,
                "skipped": {str(k): v for k, v in self.skipped.items()}}


def model_key(params: float, tokens: float, curve) -> str:
    """Runs of one model for the annealing law: the same N, peak learning rate and tokens per step (`tokens`, the
    run's, over its last step; module docstring); runs that differ only in length or schedule share it."""
    per_step = float(tokens) / float(curve.steps[-1])
    return f"N {params:.6g}, peak lr {float(np.max(curve.lr)):.4g}, tokens/step {per_step:.6g}"


def schedule_corrected(curves, ids, N, D, decay_fractions=None, from_fraction: float = FROM_FRACTION
                       ) -> CheckpointPoints:
    """The checkpoints of the runs' curves as (N, D_k, L*) points (module docstring).

    Args:
        curves: `curves.shared_fit.Curve`s, one per run, their loss NaN at steps where only the learning rate is
            known; curves of runs not in `ids` are ignored.
        ids: the runs' names (a curve's `run`), aligned with `N` and `D`.
        N, D: each run's size and final tokens.
        decay_fractions: run name -> the logged decay fraction (runs without one are absent).

    Returns:
        `CheckpointPoints` (empty when no curve has a checkpoint in range).
    """
    N, D = np.asarray(N, float), np.asarray(D, float)
    index = {run: i for i, run in enumerate(ids)}
    decay_fractions = decay_fractions or {}
    usable, skipped = [], {}
    for c in curves:
        if c.run not in index:
            continue
        observed = np.isfinite(c.loss)
        if observed.sum() < 3:
            skipped[c.run] = "fewer than 3 validation points"
            continue
        usable.append(c)
    empty = CheckpointPoints(*(np.zeros(0) for _ in range(5)), skipped=skipped)
    if not usable:
        return empty
    # a run's model from its longest curve (a cooldown branch ends earlier)
    model = {c.run: model_key(N[index[c.run]], D[index[c.run]], c)
             for c in sorted(usable, key=lambda c: float(c.steps[-1]))}
    try:
        shape = fit_shared([Curve(model[c.run], c.steps, c.lr, c.loss) for c in usable])
    except ScalingDataError as err:
        return CheckpointPoints(*(np.zeros(0) for _ in range(5)),
                                skipped={**skipped, **{c.run: str(err) for c in usable}})
    rows = []
    models = len(set(model.values()))
    for c in usable:
        law = shape.law(model[c.run])
        T = int(c.steps[-1])
        eta = dense_lr(c.steps, c.lr)
        rule = plan_rule(c.steps, c.lr, decay_fractions.get(c.run))
        observed = np.nonzero(np.isfinite(c.loss) & (c.steps >= from_fraction * T) & (c.steps < T))[0]
        for i in observed:
            k = int(c.steps[i])
            S1, S2 = schedule_areas(np.arange(1, k + 1), eta[:k], shape.momentum)
            P1, P2 = schedule_areas(np.arange(1, k + 1), planned_for(eta, k, rule), shape.momentum)
            delta = float(law.loss(P1[-1], P2[-1]) - law.loss(S1[-1], S2[-1]))
            run = index[c.run]
            rows.append((run, N[run], D[run] * k / T, float(c.loss[i]) + delta, float(c.loss[i])))
    if not rows:
        return CheckpointPoints(*(np.zeros(0) for _ in range(5)), alpha=shape.alpha, momentum=shape.momentum,
                                runs_with_curves=len(usable), skipped=skipped, models=models)
    run, n, d, corrected, measured = (np.array(x) for x in zip(*rows))
    keep = corrected > 0
    return CheckpointPoints(run[keep].astype(int), n[keep], d[keep], corrected[keep], measured[keep],
                            alpha=shape.alpha, momentum=shape.momentum, runs_with_curves=len(usable),
                            skipped=skipped, models=models)
