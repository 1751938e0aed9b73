"""Run tables read from CSV: the columns, and errors that name the line and the column."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

import numpy as np

from lightning_scaling.errors import InsufficientRunsError, ScalingDataError
from lightning_scaling.runs.validation import check_plausible, suggest_runs, validate_runs

REQUIRED_COLUMNS = ("params", "tokens", "loss")
OPTIONAL_COLUMNS = ("flops", "params_avg", "run_id", "unique_tokens", "lr", "budget", "group")
POINT_COLUMNS = ("params", "tokens")


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
    unique_tokens: np.ndarray | None = None  # distinct tokens each run saw (repeated data), when the CSV gives them
    lr: np.ndarray | None = None  # each run's peak learning rate (NaN where not given): learning-rate sweeps
    groups: list[str] | None = None  # the `group` column: the budget each run was planned at, as a label
    budget: np.ndarray | None = None  # the `budget` column: the compute each run was planned at

    @property
    def budgets(self) -> np.ndarray | None:
        """The budget each run was planned at, for the backtest's folds: the `group` column, else `budget` (both as
        labels: equal values are one budget), else `flops` (measured compute: its natural breaks), else None (the
        folds then follow the natural breaks of 6ND)."""
        if self.groups is not None:
            return np.array(self.groups, dtype=object)
        if self.budget is not None:
            return np.array([float(b) for b in self.budget], dtype=object)
        return self.flops

    @property
    def extra(self) -> dict | None:
        """Per-run data beyond N and D that some law forms use (`law.form.extras_for`)."""
        return {"unique_tokens": self.unique_tokens} if self.unique_tokens is not None else None

    def __len__(self) -> int:
        return len(self.N)


def _read_rows(path) -> tuple[list[str], list[dict[str, str]]]:
    """The header's columns and the rows (text, stripped) of a runs CSV; unknown or missing columns refused."""
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
    return found, rows


def _numbers(path, found: list[str], rows: list[dict[str, str]]) -> tuple[list[str], list[str], dict]:
    """Each run's label ("line 4 (run_id=abc)") and run id, and each numeric column's values (NaN for no `lr`)."""
    labels, run_ids = [], []
    columns: dict[str, list[float]] = {c: [] for c in ("params", "tokens", "loss", "flops", "params_avg",
                                                       "unique_tokens", "lr", "budget")}
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
            if text == "" and column == "lr":  # not known for this run
                text = "nan"
            try:
                columns[column].append(float(text))
            except ValueError:
                raise ScalingDataError(f"{path}: {label}: `{column}` is not a number: {text!r}") from None
    return labels, run_ids, columns


def _peak_lrs(path, values: list[float], labels: list[str], rows: list[dict[str, str]]) -> np.ndarray:
    """The runs' peak learning rates: each a number > 0, or NaN where not given."""
    lr = np.array(values, float)
    bad = [i for i, v in enumerate(lr) if not (np.isnan(v) or (np.isfinite(v) and v > 0))]
    if bad:
        raise ScalingDataError(f"{path}: {labels[bad[0]]}: `lr` must be a positive number or empty, got "
                               f"{rows[bad[0]].get('lr')!r}")
    return lr


def read_runs_csv(path) -> RunTable:
    """Read runs from a CSV with columns params, tokens, loss and optionally flops, params_avg, run_id, unique_tokens,
    lr (the peak learning rate; may be empty), budget (the compute a run was planned at) and group (a label of
    that budget): the backtest's folds follow group, budget or flops, in that order.

    Parameters and tokens are counts (not millions): values outside `validation.PLAUSIBLE` are refused.

    Raises:
        ScalingDataError: unknown or missing columns (the message lists what was found and what is expected),
            a value that is not a number (the line is named), or an invalid value (see `validate_runs`).
    """
    found, rows = _read_rows(path)
    labels, run_ids, columns = _numbers(path, found, rows)
    N, D, L = validate_runs(columns["params"], columns["tokens"], columns["loss"], labels)

    def column(name: str) -> np.ndarray | None:
        """A count column validated beside the tokens and the loss, or None when the file lacks it."""
        return validate_runs(columns[name], D, L, labels, names=(name, "tokens", "loss"))[0] if name in found else None

    flops, dense = column("flops"), N
    params_column = "params_avg" if "params_avg" in found else "params"
    if params_column == "params_avg":
        N = column("params_avg")
    unique = column("unique_tokens")
    budget = column("budget")
    groups = [row.get("group", "") for row in rows] if "group" in found else None
    if groups is not None and any(not g for g in groups):
        empty = next(i for i, g in enumerate(groups) if not g)
        raise ScalingDataError(f"{path}: {labels[empty]}: `group` is empty (name the budget each run was planned "
                               "at, or leave the column out)")
    lr = _peak_lrs(path, columns["lr"], labels, rows) if "lr" in found else None
    counts = {"params": dense, "tokens": D, "params_avg": N if params_column == "params_avg" else None,
              "flops": flops, "unique_tokens": unique}
    check_plausible({k: v for k, v in counts.items() if v is not None}, labels)
    return RunTable(
        N=N, D=D, loss=L, flops=flops, run_ids=run_ids if "run_id" in found else None, labels=labels,
        params_column=params_column, dense_params=dense, unique_tokens=unique, lr=lr, groups=groups, budget=budget,
    )


#: Per-point columns a law form may need at the points it predicts (the data-constrained form: unique tokens).
POINT_EXTRA_COLUMNS = ("unique_tokens",)


def read_points_csv(path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(params, tokens, extras) of a CSV of runs to predict: ``params`` and ``tokens``, and the per-point columns a
    law form may need (`POINT_EXTRA_COLUMNS`, e.g. ``unique_tokens``: repeated data) as ``{column: values}``. A runs
    file works too: its other known columns (``loss``, ``flops``...) are ignored.

    Raises:
        ScalingDataError: a missing column, an unknown one (named, with the known ones), no rows, or a value that
            is not a finite number > 0 (line and column named).
    """
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        found = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in POINT_COLUMNS if c not in found]
        known = POINT_COLUMNS + POINT_EXTRA_COLUMNS + REQUIRED_COLUMNS + OPTIONAL_COLUMNS
        unknown = [c for c in found if c not in known]
        if missing or unknown:
            parts = ([f"missing column(s) {missing}"] if missing else []) + (
                [f"unknown column(s) {unknown}"] if unknown else [])
            raise ScalingDataError(f"{path}: " + " and ".join(parts) + f"; found {found}, expected "
                                   f"{list(POINT_COLUMNS)} and optionally {list(POINT_EXTRA_COLUMNS)} (the columns "
                                   "of a runs file are accepted and ignored)")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    if not rows:
        raise ScalingDataError(f"{path}: no points (the file has a header but no rows)")
    columns = [*POINT_COLUMNS, *(c for c in POINT_EXTRA_COLUMNS if c in found)]
    values = {c: [] for c in columns}
    for line, row in enumerate(rows, start=2):
        for column in columns:
            text = row.get(column, "")
            try:
                value = float(text)
            except ValueError:
                raise ScalingDataError(f"{path}: line {line}: `{column}` is not a number: {text!r}") from None
            if not (math.isfinite(value) and value > 0):
                raise ScalingDataError(f"{path}: line {line}: `{column}` must be a finite number > 0, got {text!r}")
            values[column].append(value)
    extras = {c: np.array(values[c]) for c in POINT_EXTRA_COLUMNS if c in values}
    return np.array(values["params"]), np.array(values["tokens"]), extras
