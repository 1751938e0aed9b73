"""The runs the planner answers from, whichever way they came: a CSV table (`runs.table.read_runs_csv`) or the run
store's `Selection` (the closing hook's records). Both become one `Runs`: N (dense, or N_avg for all when any run is
sparse), D, the final loss, the per-run extras some law forms use (unique tokens), how to name each run in errors,
the unit D is counted in, and the rows the result lists as used and left out; from the store also the records
themselves (for their loss curves) and the curves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lightning_scaling.errors import ScalingDataError
from lightning_scaling.runs.records import Selection
from lightning_scaling.runs.schema import DATA_UNIT
from lightning_scaling.runs.table import RunTable, read_runs_csv
from lightning_scaling.schedules.flops import training_compute


@dataclass(frozen=True)
class Runs:
    """The runs to fit (see the module docstring); build one with `from_table`, `from_selection` or `read_runs`.

    Attributes:
        N, D, L: N (dense, or N_avg when `params_column` is "params_avg"), tokens (or samples), final loss.
        params_column: "params_avg" when N is the average non-zero count, else "params".
        extra: per-run data beyond N and D (``unique_tokens``) or None.
        labels: each run's name in errors and in the fit's messages.
        data_unit: the unit of D ("tokens", or "samples" for non-token models).
        used, excluded: the rows of ``runs`` in the result (``excluded`` with each reason).
        records: the store's run records (empty for a table): their curves, schedules and sparsity.
        curves: the runs' loss curves (`curves.forecast.Curve`, `run` = the run id), or None.
        lr: each run's peak learning rate (NaN where unknown), or None: learning-rate sweeps.
        budgets: the budget each run was planned at (a CSV's ``budget``, ``group`` or ``flops`` column), or None:
            the backtest's folds follow it (`evaluation.folds.budget_groups`).
    """

    N: np.ndarray
    D: np.ndarray
    L: np.ndarray
    params_column: str = "params"
    extra: dict | None = None
    labels: tuple = ()
    data_unit: str = "tokens"
    used: tuple = ()
    excluded: tuple = ()
    records: tuple = ()
    curves: list | None = field(default=None, repr=False)
    lr: np.ndarray | None = field(default=None, repr=False)
    budgets: np.ndarray | None = field(default=None, repr=False)

    @property
    def sparse(self) -> bool:
        """Whether N is N_avg (some run is sparse)."""
        return self.params_column == "params_avg"

    @property
    def C(self) -> np.ndarray:
        """The runs' compute as the law counts it, C = 6ND (Hoffmann et al. 2022)."""
        return training_compute(self.N, self.D)

    def __len__(self) -> int:
        return len(self.N)

    @classmethod
    def empty(cls) -> Runs:
        """No runs yet (a plan from the prior)."""
        return cls(N=np.zeros(0), D=np.zeros(0), L=np.zeros(0))

    @classmethod
    def from_table(cls, table: RunTable) -> Runs:
        """The runs of a CSV table (its optional ``flops``, ``run_id``, ``unique_tokens`` and ``lr`` kept)."""
        dense = table.dense_params if table.dense_params is not None else table.N
        ids = table.run_ids or [None] * len(table)
        used = tuple({"run_id": ids[i] or None, "run_name": table.labels[i] if table.labels else None,
                      "params": float(dense[i]), "tokens": float(table.D[i]),
                      "flops": float(table.flops[i]) if table.flops is not None else None,
                      "compute_6nd": float(training_compute(table.N[i], table.D[i])), "loss": float(table.loss[i]),
                      "sparsity": None} for i in range(len(table)))
        return cls(N=table.N, D=table.D, L=table.loss, params_column=table.params_column, extra=table.extra,
                   labels=tuple(table.labels or [f"row {i}" for i in range(len(table))]), used=used, lr=table.lr,
                   budgets=table.budgets)

    @classmethod
    def from_selection(cls, selection: Selection, curves: list | None = None, lr=None) -> Runs:
        """The usable runs of the store's `selection` (N_avg for all when any is sparse), with the excluded ones
        and why; `curves` and `lr` as the store reads them (`curves(..., dense_lr=True)`, `peak_learning_rates`).

        Raises:
            ScalingDataError: the runs count D in different units (`data_unit_of`).
        """
        used = selection.used
        unit = data_unit_of(used)
        N, D, L, column = law_inputs(used)
        rows = tuple({"run_id": r.run_id, "run_name": r.run_name, "params": r.params, "tokens": r.tokens,
                      "flops": r.flops, "compute_6nd": float(training_compute(n, r.tokens)), "loss": r.loss,
                      "sparsity": r.sparsity} for r, n in zip(used, N))
        excluded = tuple({"run_id": r.run_id, "run_name": r.run_name, "reason": why} for r, why in selection.excluded)
        return cls(N=N, D=D, L=L, params_column=column, labels=tuple(f"run {r.run_name or r.run_id}" for r in used),
                   data_unit=unit, used=rows, excluded=excluded, records=tuple(used), curves=curves,
                   lr=None if lr is None else np.asarray(lr, float))

    def runs_dict(self) -> dict:
        """``runs`` of the result: the runs used and the ones left out, with reasons."""
        return {"used": [dict(r) for r in self.used], "excluded": [dict(r) for r in self.excluded]}


def read_runs(path) -> Runs:
    """The runs of a CSV file (`runs.table.read_runs_csv`: its columns and errors)."""
    return Runs.from_table(read_runs_csv(path))


def law_inputs(used) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(N, D, loss, params_column) of run records: N is N_avg for all when any run is sparse, else the dense count."""
    sparse = any(r.sparse for r in used)
    N = np.array([(r.params if sparse else (r.params_dense or r.params)) for r in used], float)
    D = np.array([r.tokens for r in used], float)
    L = np.array([r.loss for r in used], float)
    return N, D, L, "params_avg" if sparse else "params"


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
