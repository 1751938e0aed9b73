"""Whole-curve laws: the loss along one run as a function of the learning rates it has seen.

The learning-rate annealing law (Tissue et al. 2024, "Scaling Law with Learning Rate Annealing", Eq. 1):

    L(s) = L0 + A * S1(s)^-alpha - C * S2(s)

    S1(s) = sum_{i <= s} eta_i                           the forward area: how far the weights have travelled
    S2(s) = sum_{i <= s} m_i,  m_i = lam * m_{i-1} + (eta_{i-1} - eta_i)   the annealing area, with momentum lam

with eta_i the learning rate of optimizer step i and lam about 0.999 (their Sec. 3; 0.999 is their default and
the value used here unless given). A constant learning rate has S2 = 0 and the law is a power law in the steps; a
decay (cosine, WSD's cooldown, the Power schedule's exponential tail) adds S2 > 0 and lowers the loss by C S2.

Warmup. While the learning rate rises, eta_{i-1} - eta_i < 0 would make S2 negative and "raise" the loss; Tissue
et al. fit after warmup. Here the rises are left out of the momentum (the increments are clipped at 0), so warmup
adds to the forward area S1 and nothing to S2, and a warmup phase needs no special handling by the caller.

Steps between logged points. The law needs eta at every optimizer step; a curve logged every k steps gives it at
those steps, and the learning rate in between is interpolated linearly (exact for linear warmup and decay, close
for smooth schedules); before the first logged step the first interval's line is extended back to step 1, so a
linear warmup's area is not overcounted (taking the first logged value there biases alpha on sparsely logged
curves).

Fitting (`curves.shared_fit`: `fit_shared` over runs, `fit_curve` for one curve). For fixed alpha the law is linear in
(L0, A, C): a non-negative least-squares solve gives them for every alpha of a grid (`ALPHA_GRID`; variable
projection, as `law.search` does for Chinchilla), and the best cell is polished in alpha. The objective is the
squared relative error of the loss, which weighs the points of a curve equally wherever the loss is.

Identifiability. C is measured only where the learning rate has fallen: a curve seen during a constant (or WSD
stable) phase has S2 = 0 there and says nothing about C, and a short prefix of a cosine little. Forecasting the
rest of a run from its first part therefore needs C (and alpha) from other runs of the store; a forecast from the
curve alone is not offered.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from lightning_scaling.errors import ScalingDataError
from lightning_scaling.options import Interval

MOMENTUM = 0.999  # Tissue et al. 2024, Sec. 3
ALPHA_GRID = np.linspace(0.02, 2.0, 100)
MOMENTUM_RANGE = Interval(0.0, 1.0, closed="left")  # the annealing area's lam: 0 forgets at once, 1 never decays


@dataclass(frozen=True)
class AnnealingLaw:
    """L = L0 + A S1^-alpha - C S2 (Tissue et al. 2024)."""

    L0: float
    A: float
    C: float
    alpha: float
    momentum: float = MOMENTUM

    def loss(self, S1, S2):
        S1, S2 = np.asarray(S1, float), np.asarray(S2, float)
        return self.L0 + self.A * S1 ** -self.alpha - self.C * S2

    def to_dict(self) -> dict:
        return asdict(self)


def schedule_areas(steps, lr, momentum: float = MOMENTUM) -> tuple[np.ndarray, np.ndarray]:
    """S1 and S2 (module docstring) at each of `steps`, from the learning rate `lr` at those steps.

    Args:
        steps: increasing optimizer steps (integers >= 1), shape (n,).
        lr: the learning rate at each of them; in between it is interpolated linearly, and before the first logged
            step the line through the first two is extended back (clipped at 0): exact for a linear warmup from 0
            and for a constant rate.
        momentum: lam of the annealing momentum, in [0, 1).

    Returns:
        (S1, S2), each of shape (n,).

    >>> S1, S2 = schedule_areas([1, 2, 3, 4], [1.0, 1.0, 0.5, 0.5], momentum=0.0)
    >>> S1.tolist(), S2.tolist()
    ([1.0, 2.0, 2.5, 3.0], [0.0, 0.0, 0.5, 0.5])
    """
    steps = np.asarray(steps, float)
    lr = np.asarray(lr, float)
    momentum = MOMENTUM_RANGE.check("momentum", momentum)
    last = int(steps[-1])
    every = np.arange(1, last + 1, dtype=float)
    eta = np.interp(every, steps, lr)
    if len(steps) > 1 and steps[0] > 1:  # before the first logged step: the first interval's line, extended back
        slope = (lr[1] - lr[0]) / (steps[1] - steps[0])
        head = every < steps[0]
        eta[head] = np.maximum(lr[0] + slope * (every[head] - steps[0]), 0.0)
    S1 = np.cumsum(eta)
    drops = np.maximum(np.concatenate([[0.0], eta[:-1] - eta[1:]]), 0.0)  # rises (warmup) are left out
    if momentum == 0.0:
        m = drops
    else:  # m_i = lam m_{i-1} + drop_i, as a discounted cumulative sum computed in chunks (no overflow of lam^-i)
        m = np.empty_like(drops)
        carry = 0.0
        chunk = int(max(1, min(2048, 30.0 / -math.log(momentum)))) if momentum > 0 else 1  # lam^-chunk <= e^30
        powers = momentum ** np.arange(chunk, dtype=float)
        for lo in range(0, len(drops), chunk):
            d = drops[lo:lo + chunk]
            k = len(d)
            p = powers[:k]
            # m_{lo+j} = lam^(j+1) carry + sum_{t <= j} lam^(j - t) d_t
            acc = np.cumsum(d / p) * p
            m[lo:lo + k] = acc + carry * p * momentum
            carry = m[lo + k - 1]
    S2 = np.cumsum(m)
    at = steps.astype(int) - 1
    return S1[at], S2[at]


def check_points(steps, lr, loss, where: str = "", planned_ok: bool = False):
    """`steps`, `lr`, `loss` as float arrays of one non-zero length, or `ScalingDataError` naming the point (and
    `where`, e.g. "run 'a'"): steps increasing integers >= 1, learning rates finite >= 0 and not all 0, losses
    finite > 0 (or NaN, a planned step, with `planned_ok`)."""
    try:
        steps, lr, loss = (np.asarray(x, float).reshape(-1) for x in (steps, lr, loss))
    except (TypeError, ValueError) as err:
        raise ScalingDataError(f"{where + ': ' if where else ''}a curve's steps, lr and loss must be numbers: "
                               f"{err}") from None
    at = f"{where}, point" if where else "point"
    if not (len(steps) == len(lr) == len(loss)) or len(steps) == 0:
        raise ScalingDataError(f"{where + ': ' if where else ''}steps, lr and loss must have the same, non-zero "
                               f"length, got {len(steps)}, {len(lr)}, {len(loss)}")
    finite_loss = np.isfinite(loss) & (loss > 0)
    for name, ok in (("step", np.isfinite(steps) & (steps >= 1) & (steps == np.round(steps))),
                     ("lr", np.isfinite(lr) & (lr >= 0)),
                     ("loss", (np.isnan(loss) | finite_loss) if planned_ok else finite_loss)):
        bad = np.nonzero(~ok)[0]
        if len(bad):
            values = {"step": steps, "lr": lr, "loss": loss}[name]
            losses = "losses > 0 or empty" if planned_ok else "losses finite and > 0"
            raise ScalingDataError(f"{at} {int(bad[0])}: `{name}` is {values[bad[0]]!r}; steps must be integers "
                                   f">= 1, learning rates finite and >= 0, {losses}")
    if np.any(np.diff(steps) <= 0):
        i = int(np.nonzero(np.diff(steps) <= 0)[0][0]) + 1
        raise ScalingDataError(f"{at} {i}: `step` {steps[i]:g} does not increase (previous {steps[i - 1]:g})")
    if not np.any(lr > 0):
        raise ScalingDataError(f"{where + ': ' if where else ''}every learning rate is 0: the forward area S1 is 0 "
                               "and the law is undefined")
    return steps, lr, loss
