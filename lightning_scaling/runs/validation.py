"""Run data for the fitter: validation with errors that name the row, and the check that there is enough of it.

A run is (N, D, L): parameters (dense, or the average non-zero count N_avg of a sparse run), training tokens and
final loss. `validate_runs` turns user input into clean float arrays or raises `ScalingDataError` naming the
row; `check_enough_runs` raises `InsufficientRunsError` with a list of runs that would constrain the fit
(`suggest_runs`: an isoFLOP group at the largest compute so far, the runs that
would constrain the law, named beside the check that asks for them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lightning_scaling.errors import InsufficientRunsError, ScalingDataError
from lightning_scaling.schedules.flops import FLOPS_PER_PARAM_TOKEN, training_compute

# Magnitudes no training run has, for runs given as counts (run records, run tables): a value outside its range is a
# logging or unit error (1e30 parameters, 1 token), refused with the row named rather than fitted. Generous on both
# sides: tiny test models have ~1e3 parameters. The fitter itself is unit-free (N in millions fits the same law).
PLAUSIBLE = {"params": (10.0, 1e15), "params_avg": (10.0, 1e15), "tokens": (100.0, 1e17),
             "unique_tokens": (100.0, 1e17), "flops": (1e3, 1e32)}
MIN_RUNS = 5  # five parameters in the law: fewer runs cannot determine it
MIN_DISTINCT = 3  # a power law plus offset along an axis needs at least three distinct values on it
TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022, Table 3: ~20 tokens per parameter is compute-optimal


def suggest_runs(N, D, n_more: int = 3, tokens_per_param: float = TOKENS_PER_PARAM,
                 at_flops: float | None = None) -> list[dict]:
    """Runs that would best constrain a fit of the law, given the runs so far.

    The design is an isoFLOP group (Hoffmann et al. 2022, Approach 2) at the largest compute so far: three model
    sizes around the compute-optimal size (a third of it, it, three times it) with the tokens that spend the same
    compute. Such a group pins both exponents (varying N and D against each other) and its curvature pins E.
    Runs already present are skipped; if a group is not enough, the next one is at four times the compute.

    Args:
        N, D: the runs so far (possibly empty).
        n_more: how many runs to propose.
        tokens_per_param: the D/N ratio assumed optimal before any fit exists.
        at_flops: the compute of the first group (default: the largest so far).

    Returns:
        A list of ``{"params": N, "tokens": D, "flops": 6 N D}`` dicts.
    """
    N = np.asarray(N, float)
    D = np.asarray(D, float)
    C = float(training_compute(N, D).max()) if len(N) else FLOPS_PER_PARAM_TOKEN * tokens_per_param * 1e12
    C = float(at_flops) if at_flops is not None else C
    have = {(round(math.log(n), 2), round(math.log(d), 2)) for n, d in zip(N, D)}
    out: list[dict] = []
    while len(out) < n_more:
        N_c = math.sqrt(C / (FLOPS_PER_PARAM_TOKEN * tokens_per_param))
        for factor in (1.0, 1 / 3, 3.0, 1 / 9, 9.0):
            n = float(f"{N_c * factor:.3g}")
            d = float(f"{C / (FLOPS_PER_PARAM_TOKEN * n):.3g}")
            key = (round(math.log(n), 2), round(math.log(d), 2))
            if key in have:
                continue
            have.add(key)
            out.append({"params": n, "tokens": d, "flops": training_compute(n, d)})
            if len(out) >= n_more:
                break
        C *= 4.0
    return out



def _label(i: int, labels: Sequence[str] | None) -> str:
    return labels[i] if labels is not None else f"row {i}"


def validate_runs(N, D, loss, labels: Sequence[str] | None = None, names=("params", "tokens", "loss")):
    """Check that N, D and loss are equal-length arrays of finite positive numbers.

    Args:
        N, D, loss: array-likes of the same length.
        labels: how to name each row in errors (e.g. "line 4 (run_id=abc)"); defaults to "row i".
        names: the names of the three inputs in errors.

    Returns:
        (N, D, loss) as 1-d float arrays.

    Raises:
        ScalingDataError: lengths differ, or a value is NaN, infinite, zero or negative (the row is named).
    """
    arrays = []
    for name, values in zip(names, (N, D, loss)):
        try:
            a = np.asarray(values, dtype=float).reshape(-1)
        except (TypeError, ValueError) as err:
            raise ScalingDataError(f"`{name}` must be numbers: {err}") from None
        arrays.append(a)
    lengths = {name: len(a) for name, a in zip(names, arrays)}
    if len(set(lengths.values())) != 1:
        raise ScalingDataError(f"inputs must have the same length, got {lengths}")
    if labels is not None and len(labels) != len(arrays[0]):
        raise ScalingDataError(f"`labels` has {len(labels)} entries for {len(arrays[0])} runs")
    for name, a in zip(names, arrays):
        bad = np.nonzero(~np.isfinite(a) | (a <= 0))[0]
        if len(bad):
            i = int(bad[0])
            v = float(a[i])
            kind = "NaN" if math.isnan(v) else ("infinite" if math.isinf(v) else "not positive")
            more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
            raise ScalingDataError(
                f"{_label(i, labels)}: `{name}` is {kind} ({v!r}); every value must be a finite number > 0{more}"
            )
    return tuple(arrays)


def check_plausible(columns: dict, labels: Sequence[str] | None = None) -> None:
    """Raise `ScalingDataError` naming the row and the column of the first value outside its `PLAUSIBLE` range.

    For runs given as counts (a run table, run records); the fitter itself takes N and D in any unit.
    """
    for name, values in columns.items():
        problem = implausible(name, values)
        if problem is not None:
            i, message = problem
            raise ScalingDataError(f"{_label(i, labels)}: {message}")


def implausible(name: str, values) -> tuple[int, str] | None:
    """The first value of `name` outside its `PLAUSIBLE` range, as (index, message), or None (also for names
    without a range)."""
    if name not in PLAUSIBLE:
        return None
    lo, hi = PLAUSIBLE[name]
    a = np.asarray(values, float).reshape(-1)
    bad = np.nonzero((a < lo) | (a > hi))[0]
    if not len(bad):
        return None
    i = int(bad[0])
    more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
    return i, (f"`{name}` is {float(a[i]):.4g}, outside the range a training run can have [{lo:g}, {hi:g}]: a "
               f"logging or unit error?{more}")


def distinct(values, rtol: float = 1e-3) -> np.ndarray:
    """Sorted distinct values, treating values within `rtol` (relative) as equal."""
    logs = np.sort(np.log(np.asarray(values, float)))
    if len(logs) == 0:
        return logs
    keep = np.concatenate([[True], np.diff(logs) > math.log1p(rtol)])
    return np.exp(logs[keep])


def check_enough_runs(N, D, min_runs: int = MIN_RUNS, min_distinct: int = MIN_DISTINCT) -> None:
    """Raise `InsufficientRunsError` when the runs cannot constrain the five-parameter law.

    The message says what is missing and proposes concrete runs (see `suggest_runs`).
    """
    n = len(N)
    dN, dD = distinct(N), distinct(D)
    missing = []
    if n < min_runs:
        missing.append(f"at least {min_runs} runs (got {n})")
    if len(dN) < min_distinct:
        missing.append(f"at least {min_distinct} distinct parameter counts (got {len(dN)}: {_fmt(dN)})")
    if len(dD) < min_distinct:
        missing.append(f"at least {min_distinct} distinct token counts (got {len(dD)}: {_fmt(dD)})")
    points = len({(float(a), float(b)) for a, b in zip(np.asarray(N).ravel(), np.asarray(D).ravel())})
    if n >= min_runs and points < min_runs:  # repeats of one (N, D) measure the noise, not the law's five parameters
        missing.append(f"at least {min_runs} distinct (params, tokens) points (got {points}: repeated runs of one "
                       "size and budget count once)")
    if not missing:
        return
    n_more = max(min_runs - n, min_distinct - len(dN), min_distinct - len(dD), min_runs - points, 1)
    n_more = max(n_more, 3 if (len(dN) < min_distinct or len(dD) < min_distinct) else n_more)
    suggestions = suggest_runs(N, D, n_more)
    add = "; ".join(f"N={s['params']:.3g} params, D={s['tokens']:.3g} tokens" for s in suggestions)
    raise InsufficientRunsError(
        "too few runs to fit L(N, D) = E + A/N^alpha + B/D^beta: need "
        + " and ".join(missing)
        + f". Add runs such as: {add}.",
        suggestions,
    )


def _fmt(values) -> str:
    return ", ".join(f"{v:.3g}" for v in values) if len(values) else "none"
