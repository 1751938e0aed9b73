"""The law across runs as a second forecast of a run's final loss, stacked with the forecast from its own curve.

A run's curve forecast (`curves.forecast`) extrapolates its first part; at 30% of a short, noisy run that rests on a
few points. The other runs of the store say something the run's own curve cannot: where runs of this size and budget
end. The scaling law over their final losses (Hoffmann et al. 2022, L(N, D) = E + A/N^alpha + B/D^beta, fitted as
`law.fit.ChinchillaFit` does) forecasts the run's final loss from its (N, D) alone.

The two are combined geometrically, log L = w log L_law + (1 - w) log L_curve, with the weight chosen on the other
runs (stacking; Wolpert 1992, Breiman 1996): for each of them the law's error comes from a fit without it (leave
one out, the refits batched as the bootstrap's are) and the curve's error from the same forecast made from the same
fraction of its curve (`Forecaster`). In logs the combined error is the same mix of the two errors, so w is the
least-squares mix of the two error columns, clipped to [0, 1]; the interval is then the split-conformal quantile of
the combined errors. Early in a run, when the curve says little, the law carries the forecast; near the end the
curve does.

A run unlike the others is not pulled to the law: where it stands (its last loss seen over the law's forecast of its
final loss) is compared with where the other runs stood at the same fraction of theirs (over the law fitted without
them); when it is further from their median than twice the furthest of them (a learning rate too high, a bug: not
the scatter of runs like the others), the weight is 0 and the forecast is the curve's alone, so that a hopeless run
still shows as one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lightning_scaling.errors import LightningScalingError
from lightning_scaling.law.bootstrap import weighted_refits
from lightning_scaling.law.fit import ChinchillaFit

MIN_RUNS = 6  # the law has five parameters and each run's error comes from a fit without it
UNLIKE = 2.0  # a run further from the others' median level than this many times the furthest of them is unlike them


@dataclass(frozen=True)
class FinalLaw:
    """The law over runs' final losses, with each run's error from a fit that left it out.

    Attributes:
        fit: the law fitted on every run (a `law.fit.ChinchillaFit`).
        errors: run -> log(final loss / the loss forecast by the fit without that run).
    """

    fit: object
    errors: dict

    def loss(self, N: float, D: float) -> float:
        return float(self.fit.predict(np.array([N], float), np.array([D], float))[0])


def _fit(N, D, L):
    """The law on these final losses, fitted quietly: its parameters on their search box are in the fit's
    ``boundary_`` and ``degenerate_`` (`FinalLaw.fit`), not warnings."""
    return ChinchillaFit(warn=False).fit(N, D, L)


def final_law(ends: dict) -> FinalLaw | None:
    """The law over `ends` (run -> (N, D, final loss)), or None when they cannot constrain it (fewer than
    `MIN_RUNS` runs or a fit refused)."""
    runs = [r for r, (N, D, L) in ends.items() if all(math.isfinite(v) and v > 0 for v in (N, D, L))]
    if len(runs) < MIN_RUNS:
        return None
    N, D, L = (np.array([ends[r][i] for r in runs], float) for i in range(3))
    try:
        fit = _fit(N, D, L)
    except LightningScalingError:
        return None
    # every run left out in turn: one batched refit, from the full fit's basins (`law.bootstrap`)
    E, A, B, alpha, beta = weighted_refits(fit, 1.0 - np.eye(len(runs))).T
    with np.errstate(all="ignore"):
        predicted = E + A * N ** -alpha + B * D ** -beta
    errors = {r: float(math.log(L[i] / predicted[i])) for i, r in enumerate(runs)
              if predicted[i] > 0 and math.isfinite(predicted[i])}
    return FinalLaw(fit, errors)


@dataclass(frozen=True)
class Stack:
    """The stacked forecast of a run's final loss (module docstring)."""

    weight: float  # w of the law
    loss: float  # the stacked forecast
    law_loss: float  # the law's forecast at the run's (N, D)
    curve_loss: float  # the curve's forecast
    errors: list  # the stacked relative errors of the other runs (final / forecast - 1)
    runs: int  # runs with both errors, which chose w
    note: str

    def to_dict(self) -> dict:
        return {"weight": self.weight, "loss": self.loss, "law_loss": self.law_loss, "curve_loss": self.curve_loss,
                "runs": self.runs, "note": self.note}


def _weight(u_curve: np.ndarray, gap: np.ndarray) -> float:
    """w minimising the sum of (u_curve - w gap)^2, the stacked log errors, clipped to [0, 1]."""
    spread = float(np.dot(gap, gap))
    return float(np.clip(np.dot(u_curve, gap) / spread, 0.0, 1.0)) if spread > 0 else 0.0


def stack(law_loss: float, curve_loss: float, law_errors: dict, curve_errors: dict, levels: dict | None = None,
          my_level: float | None = None) -> Stack | None:
    """Stack the law's and the curve's forecasts of a run's final loss (module docstring).

    Args:
        law_loss, curve_loss: the two forecasts for the run.
        law_errors: run -> log error of the law without that run (`FinalLaw.errors`).
        curve_errors: run -> relative error of the curve forecast of that run from the same fraction of its curve.
        levels, my_level: run -> log(the last loss seen at that fraction / the law's forecast of its final loss), of
            the other runs and of this run: how far above the law a run is where it stands; a run further from the
            others' median than `UNLIKE` times the largest distance among them is unlike them.

    Returns:
        None when fewer than `MIN_RUNS` runs have both errors.
    """
    common = [r for r in curve_errors if r in law_errors and curve_errors[r] > -1.0]
    if len(common) < MIN_RUNS or not (law_loss > 0 and curve_loss > 0):
        return None
    u_law = np.array([law_errors[r] for r in common])
    u_curve = np.log1p(np.array([curve_errors[r] for r in common]))
    gap = u_curve - u_law  # log(law forecast / curve forecast) of each other run
    unlike = False
    known = [levels[r] for r in common if levels and r in levels]
    if my_level is not None and len(known) >= MIN_RUNS:
        centre = float(np.median(known))
        unlike = abs(my_level - centre) > UNLIKE * float(np.max(np.abs(np.array(known) - centre)))
    if unlike:
        w = 0.0
        note = (f"the run stands {100 * math.expm1(my_level):+.1f}% from the law's forecast of its final loss, more "
                f"than twice as far from the other runs' median as any of {len(known)} other runs at the same "
                "fraction: its own curve is followed alone")
    else:
        w = _weight(u_curve, gap)
        note = (f"the final loss mixes the law across runs ({w:.0%}) and the run's curve ({1 - w:.0%}), as fits "
                f"best on {len(common)} other runs at the same fraction")
    # each other run's error with the weight chosen without it, so that the interval is not fitted to the errors
    # it is calibrated on (nested cross-validation)
    held_out = 0.0 if unlike else np.array([_weight(np.delete(u_curve, i), np.delete(gap, i))
                                            for i in range(len(common))])
    combined = u_curve - held_out * gap
    loss = math.exp(w * math.log(law_loss) + (1.0 - w) * math.log(curve_loss))
    return Stack(weight=w, loss=loss, law_loss=float(law_loss), curve_loss=float(curve_loss),
                 errors=[float(e) for e in np.expm1(combined)], runs=len(common), note=note)
