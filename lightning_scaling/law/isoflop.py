"""Approach 2 of Hoffmann et al. 2022 (isoFLOP profiles), as a cross-check of the parametric fit.

Runs that spent (nearly) the same compute form an isoFLOP group. Within a group, loss against log N is close to a
parabola whose minimum is the compute-optimal size for that budget, N_opt(C). A power law through the minima,
N_opt = k C^a, gives the exponent a, which the parametric law predicts as beta / (alpha + beta)
(Hoffmann et al. 2022, Sec. 3.2 and Table 2). Agreement of the two is evidence that the fit is not an artefact of
the search; disagreement says the runs do not yet constrain the law.

    >>> import numpy as np
    >>> from lightning_scaling.law.chinchilla import ChinchillaLaw
    >>> law = ChinchillaLaw(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.37)
    >>> C = np.repeat([1e17, 1e18, 1e19], 5)
    >>> N = np.concatenate([np.geomspace(c ** 0.5 / 30, c ** 0.5 / 3, 5) for c in (1e17, 1e18, 1e19)])
    >>> result = isoflop_analysis(N, C / (6 * N), law.loss(N, C / (6 * N)))
    >>> round(result.exponent, 2)
    0.52
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lightning_scaling.runs.validation import distinct
from lightning_scaling.schedules.flops import training_compute


@dataclass(frozen=True)
class IsoFLOPGroup:
    """One compute budget: its runs' sizes and losses and the parabola's minimum."""

    flops: float
    params: list[float]
    losses: list[float]
    params_opt: float
    loss_opt: float
    interior: bool  # the minimum lies inside the group's range of N (not extrapolated)


@dataclass(frozen=True)
class IsoFLOPResult:
    """Compute-optimal sizes per budget and the power law N_opt = coefficient * C^exponent through them."""

    groups: list[IsoFLOPGroup]
    exponent: float
    coefficient: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "exponent": self.exponent,
            "coefficient": self.coefficient,
            "groups": [
                {"flops": g.flops, "params_opt": g.params_opt, "loss_opt": g.loss_opt, "n_runs": len(g.params),
                 "interior": g.interior}
                for g in self.groups
            ],
            "notes": list(self.notes),
        }


BUDGET_GAP = 0.25  # runs whose compute differs by more than 25% from the next one sorted are another budget
BUDGET_SPAN = 2.0  # a group of runs spanning more than 2x in compute is no budget: runs spread over compute


def are_budgets(flops, groups) -> bool:
    """Whether `groups` (of `group_by_flops`) are budgets: none spans more than `BUDGET_SPAN` in compute (runs
    spread evenly over compute chain into a few wide groups instead)."""
    flops = np.asarray(flops, float)
    return all(flops[g].max() <= BUDGET_SPAN * flops[g].min() for g in groups if len(g))


def group_by_flops(flops, rtol: float = BUDGET_GAP) -> list[np.ndarray]:
    """Indices of runs grouped by compute budget, smallest first: the natural breaks of log compute, a new group
    wherever the next run sorted by compute is more than `rtol` (relative) above the one before. Not a fixed
    distance from a group's smallest run: the 6ND of one planned budget spans 0.9-1.1x of it, which a 10% window
    from its smallest run cuts in two.

    >>> [g.tolist() for g in group_by_flops([1.0, 0.9, 1.09, 3.1, 2.8, 10.0])]
    [[1, 0, 2], [4, 3], [5]]
    """
    flops = np.asarray(flops, float)
    order = np.argsort(flops, kind="stable")
    if not len(order):
        return []
    cuts = np.where(flops[order][1:] > flops[order][:-1] * (1 + rtol))[0] + 1
    return [np.asarray(g, int) for g in np.split(order, cuts)]


def isoflop_groups(N, D, loss, flops=None, rtol: float = 0.1, min_group: int = 3
                   ) -> tuple[list[IsoFLOPGroup], list[str]]:
    """The parabola of loss against log N fitted in each isoFLOP group with `min_group` distinct sizes, and notes
    on the groups skipped (no minimum) or whose minimum lies outside the sizes run."""
    N, D, L = (np.asarray(x, float) for x in (N, D, loss))
    C = training_compute(N, D) if flops is None else np.asarray(flops, float)
    groups: list[IsoFLOPGroup] = []
    notes: list[str] = []
    for idx in group_by_flops(C, rtol):
        if len(distinct(N[idx])) < min_group:
            continue
        x = np.log(N[idx])
        c2, c1, c0 = np.polyfit(x, L[idx], 2)
        C_g = float(np.exp(np.log(C[idx]).mean()))
        if c2 <= 0:
            notes.append(f"isoFLOP group at C={C_g:.3g} has no minimum (loss is not convex in log N); skipped")
            continue
        x_opt = -c1 / (2 * c2)
        interior = bool(x.min() <= x_opt <= x.max())
        if not interior:
            notes.append(
                f"isoFLOP group at C={C_g:.3g}: the minimum (N={math.exp(x_opt):.3g}) lies outside the sizes run "
                f"({N[idx].min():.3g}..{N[idx].max():.3g}); add a run beyond that end"
            )
        groups.append(
            IsoFLOPGroup(
                flops=C_g,
                params=[float(v) for v in N[idx]],
                losses=[float(v) for v in L[idx]],
                params_opt=float(math.exp(x_opt)),
                loss_opt=float(c0 + c1 * x_opt + c2 * x_opt * x_opt),
                interior=interior,
            )
        )
    return groups, notes


def isoflop_analysis(N, D, loss, flops=None, rtol: float = 0.1, min_group: int = 3) -> IsoFLOPResult | None:
    """Fit parabolas per isoFLOP group and a power law through their minima.

    Args:
        N, D, loss: the runs (already validated).
        flops: compute per run; defaults to 6 N D.
        rtol: runs whose compute differs by less than this fraction share a group.
        min_group: a group needs this many distinct N to fit a parabola.

    Returns:
        An `IsoFLOPResult`, or None when fewer than two groups have `min_group` distinct sizes (the runs do not
        form isoFLOP groups).
    """
    groups, notes = isoflop_groups(N, D, loss, flops, rtol, min_group)
    if len(groups) < 2:
        return None
    logC = np.log([g.flops for g in groups])
    logN_opt = np.log([g.params_opt for g in groups])
    exponent, log_k = np.polyfit(logC, logN_opt, 1)
    return IsoFLOPResult(groups=groups, exponent=float(exponent), coefficient=float(math.exp(log_k)), notes=notes)
