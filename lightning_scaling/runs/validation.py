"""Run data for the fitter: validation with errors that name the row, and which runs to add when data is thin.

A run is (N, D, L): parameters (dense, or the average non-zero count N_avg of a sparse run), training tokens and
final loss. `validate_runs` turns user input into clean float arrays or raises `ScalingDataError` naming the
row; `check_enough_runs` raises `InsufficientRunsError` with a list of runs that would constrain the fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InsufficientRunsError, ScalingDataError

MIN_RUNS = 5  # five parameters in the law: fewer runs cannot determine it
MIN_DISTINCT = 3  # a power law plus offset along an axis needs at least three distinct values on it
TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022, Table 3: ~20 tokens per parameter is compute-optimal
FLOPS_PER_PARAM_TOKEN = 6.0  # C = 6 N D (Kaplan et al. 2020, Sec. 2.1)


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


def distinct(values, rtol: float = 1e-3) -> np.ndarray:
    """Sorted distinct values, treating values within `rtol` (relative) as equal."""
    logs = np.sort(np.log(np.asarray(values, float)))
    if len(logs) == 0:
        return logs
    keep = np.concatenate([[True], np.diff(logs) > math.log1p(rtol)])
    return np.exp(logs[keep])


def suggest_runs(N, D, n_more: int = 3, tokens_per_param: float = TOKENS_PER_PARAM) -> list[dict]:
    """Runs that would best constrain a fit of the law, given the runs so far.

    The design is an isoFLOP group (Hoffmann et al. 2022, Approach 2) at the largest compute so far: three model
    sizes around the compute-optimal size (a third of it, it, three times it) with the tokens that spend the same
    compute. Such a group pins both exponents (varying N and D against each other) and its curvature pins E.
    Runs already present are skipped; if a group is not enough, the next one is at four times the compute.

    Args:
        N, D: the runs so far (possibly empty).
        n_more: how many runs to propose.
        tokens_per_param: the D/N ratio assumed optimal before any fit exists.

    Returns:
        A list of ``{"params": N, "tokens": D, "flops": 6 N D}`` dicts.
    """
    N = np.asarray(N, float)
    D = np.asarray(D, float)
    C = float((FLOPS_PER_PARAM_TOKEN * N * D).max()) if len(N) else FLOPS_PER_PARAM_TOKEN * tokens_per_param * 1e12
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
            out.append({"params": n, "tokens": d, "flops": FLOPS_PER_PARAM_TOKEN * n * d})
            if len(out) >= n_more:
                break
        C *= 4.0
    return out


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
    if not missing:
        return
    n_more = max(min_runs - n, min_distinct - len(dN), min_distinct - len(dD), 1)
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


# -- run tables from CSV ----------------------------------------------------------------------------------------
REQUIRED_COLUMNS = ("params", "tokens", "loss")
OPTIONAL_COLUMNS = ("flops", "params_avg", "run_id")


@dataclass
class RunTable:
    """Validated runs: N (dense params, or N_avg where given), D, final loss, and optional compute and ids.

    Attributes:
        params_column: "params_avg" when any run gave its average non-zero parameter count (then N is N_avg,
            with dense runs contributing their dense count, which is their N_avg), else "params".
        labels: how each run is named in errors, e.g. "line 4 (run_id=abc)".
    """

    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    flops: np.ndarray | None = None
    run_ids: list[str] | None = None
    labels: list[str] | None = None
    params_column: str = "params"
    dense_params: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.N)


def read_runs_csv(path) -> RunTable:
    """Read runs from a CSV with columns params, tokens, loss and optionally flops, params_avg, run_id.

    Raises:
        ScalingDataError: unknown or missing columns (the message lists what was found and what is expected),
            a value that is not a number (the line is named), or an invalid value (see `validate_runs`).
    """
    import csv

    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        found = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in found]
        unknown = [c for c in found if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing column(s) {missing}")
            if unknown:
                parts.append(f"unknown column(s) {unknown}")
            raise ScalingDataError(
                f"{path}: " + " and ".join(parts) + f"; found {found}, expected {list(REQUIRED_COLUMNS)} and "
                f"optionally {list(OPTIONAL_COLUMNS)}"
            )
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    if not rows:
        raise InsufficientRunsError(f"{path}: no runs (the file has a header but no rows)", suggest_runs([], [], 5))
    labels, run_ids = [], []
    columns: dict[str, list[float]] = {c: [] for c in ("params", "tokens", "loss", "flops", "params_avg")}
    for line, row in enumerate(rows, start=2):
        run_id = row.get("run_id", "")
        run_ids.append(run_id)
        label = f"line {line}" + (f" (run_id={run_id})" if run_id else "")
        labels.append(label)
        for column in columns:
            if column not in found:
                continue
            text = row.get(column, "")
            if text == "" and column == "params_avg":  # a dense run: its N_avg is its parameter count
                text = row.get("params", "")
            try:
                columns[column].append(float(text))
            except ValueError:
                raise ScalingDataError(f"{path}: {label}: `{column}` is not a number: {text!r}") from None
    N, D, L = validate_runs(columns["params"], columns["tokens"], columns["loss"], labels)
    flops = None
    if "flops" in found:
        flops = validate_runs(columns["flops"], D, L, labels, names=("flops", "tokens", "loss"))[0]
    params_column = "params"
    dense = N
    if "params_avg" in found:
        N = validate_runs(columns["params_avg"], D, L, labels, names=("params_avg", "tokens", "loss"))[0]
        params_column = "params_avg"
    return RunTable(
        N=N, D=D, loss=L, flops=flops, run_ids=run_ids if "run_id" in found else None, labels=labels,
        params_column=params_column, dense_params=dense,
    )
