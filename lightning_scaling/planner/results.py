"""The planner's answers as frozen dataclasses, each with `to_dict()`: the JSON the command line prints, the closing
hook writes to ``scaling_law/recommendation.json`` and the MLflow notes read (the keys and values of the plain dicts
the planner returned before it had types).

- `LawSummary`: the fitted law (the form's own `to_dict`), the bootstrap intervals of its parameters and the
  isoFLOP cross-check (Approach 2, Hoffmann et al. 2022).
- `NextRun`: the compute-optimal run for a budget (Eq. 4) with its intervals.
- `DataUsed`: which data the fit used (final losses, or with the runs' schedule-corrected checkpoints) and why.
- `SparseNext`: the initial dense size of a sparse next run whose N_avg is the optimum (Jin et al. 2025).
- `Advice`: all of it for the question "what next?", or the refusal (too few runs, a degenerate fit) with the runs
  to add.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

ALLOCATION_KEYS = ("params", "tokens", "flops", "loss")


@dataclass(frozen=True)
class Bootstrap:
    """How the percentile intervals were drawn."""

    confidence: float
    n_resamples: int
    seed: int


@dataclass(frozen=True)
class LawSummary:
    """The law as fitted: `law` is the form's own `to_dict()` (law, formula, fitted, parameters, their values,
    objective, n_runs, params_column, boundary, degenerate), `parameter_intervals` the bootstrap's, `isoflop` the
    cross-check (or None: too few isoFLOP groups)."""

    law: Mapping
    isoflop: dict | None = None
    parameter_intervals: Mapping = field(default_factory=dict)
    bootstrap: Bootstrap | None = None

    def to_dict(self) -> dict:
        out = dict(self.law)
        for name, (lo, hi) in self.parameter_intervals.items():
            out[f"{name}_low"], out[f"{name}_high"] = lo, hi
        if self.bootstrap is not None:
            out.update(confidence=self.bootstrap.confidence, bootstrap=self.bootstrap.n_resamples,
                       seed=self.bootstrap.seed)
        out["isoflop"] = self.isoflop
        return out


@dataclass(frozen=True)
class NextRun:
    """The compute-optimal run at ``flops`` (C = 6ND): N, D, the predicted loss, with (low, high) intervals where
    known (the budget is given: its interval, when there is one, is the budget itself)."""

    params: float
    tokens: float
    flops: float
    loss: float
    tokens_per_param: float
    intervals: Mapping = field(default_factory=dict)  # key -> (low, high), keys of ALLOCATION_KEYS

    def to_dict(self) -> dict:
        out = {"params": self.params, "tokens": self.tokens, "flops": self.flops, "loss": self.loss,
               "tokens_per_param": self.tokens_per_param}
        for key, (lo, hi) in self.intervals.items():
            out[f"{key}_low"], out[f"{key}_high"] = lo, hi
        return out


@dataclass(frozen=True)
class DataUsed:
    """Which data the fit used and why (``data`` in the result)."""

    used: str
    final_points: int
    checkpoint_points: int
    reason: str | None = None
    sentence: str | None = None
    checkpoints: dict | None = None
    backtest_mape: dict | None = None
    params_interval: dict | None = None

    def to_dict(self) -> dict:
        out = {"used": self.used, "final_points": self.final_points, "checkpoint_points": self.checkpoint_points}
        if self.checkpoints is not None:
            out.update(checkpoints=self.checkpoints, backtest_mape=self.backtest_mape)
        if self.params_interval is not None:
            out["params_interval"] = self.params_interval
        if self.reason is not None:
            out["reason"] = self.reason
        if self.sentence is not None:
            out["sentence"] = self.sentence
        return out


@dataclass(frozen=True)
class SparseNext:
    """A sparse next run: its initial dense size, whose token-weighted average is the recommended N_avg."""

    initial_params: float
    params_avg: float
    final_sparsity: float
    start_fraction: float
    end_fraction: float
    prunable_fraction: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Advice:
    """The answer to "what next?" (`planner.advise`).

    ``status`` is "ok" (a run size, its intervals, the backtest and the data used), "degenerate" (the law as fitted,
    what is wrong, the runs to add; no run size) or "insufficient_runs" (the runs to add).
    """

    status: str
    sentence: str
    runs: dict  # {"used": [...], "excluded": [...]}
    n_runs: int
    data_unit: str
    budget_rule: str | None
    settings: dict = field(default_factory=dict)
    law: LawSummary | None = None
    next_run: NextRun | None = None
    confidence: float | None = None
    intervals: dict | None = None
    backtest: dict | None = None
    backtest_curves: dict | None = None
    data: DataUsed | None = None
    n_points: int | None = None
    law_selection: dict | None = None
    figures: dict | None = None
    boundary: tuple = ()
    sparse_next: SparseNext | None = None
    architecture: dict | None = None
    message: str | None = None
    suggestions: list | None = None
    degenerate: list | None = None

    def to_dict(self) -> dict:
        out = {"runs": self.runs, "settings": dict(self.settings), "n_runs": self.n_runs,
               "n_excluded": len(self.runs["excluded"]), "data_unit": self.data_unit, "budget_rule": self.budget_rule}
        if self.status == "insufficient_runs":
            return {**out, "status": self.status, "message": self.message, "suggestions": self.suggestions,
                    "sentence": self.sentence}
        out.update(self.law.to_dict())
        out["n_runs"] = self.n_runs
        if self.status == "degenerate":
            return {**out, "status": self.status, "degenerate": self.degenerate, "message": self.message,
                    "suggestions": self.suggestions, "figures": self.figures, "sentence": self.sentence}
        run = self.next_run.to_dict()
        drawn = self.law.bootstrap is not None  # the intervals came with the allocation; else calibrated after it
        out.update(run if drawn else {k: run[k] for k in (*ALLOCATION_KEYS, "tokens_per_param")})
        out.update(sentence=self.sentence, status=self.status)
        if not drawn:
            out.update({k: v for k, v in run.items() if k not in out}, confidence=self.confidence)
        out.update(intervals=self.intervals, backtest=self.backtest)
        if self.backtest_curves is not None:
            out["backtest_curves"] = self.backtest_curves
        out.update(data=self.data.to_dict(), n_points=self.n_points)
        if self.law_selection is not None:
            out["law_selection"] = self.law_selection
        out.update(figures=self.figures, boundary=list(self.boundary))
        if self.sparse_next is not None:
            out["sparse_next"] = self.sparse_next.to_dict()
        out["architecture"] = self.architecture
        return out


@dataclass(frozen=True)
class Prediction:
    """The law's loss at one (params, tokens) with its interval: ``interval`` is "calibrated" or
    "bootstrap+scatter" (too few runs to calibrate the extrapolation), ``law`` the form used."""

    params: float
    tokens: float
    loss: float
    loss_low: float
    loss_high: float
    confidence: float
    law: str
    interval: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StagePlan:
    """The next stage of the sweep (`planner.stages`): the runs to train (dicts: ``params``, ``tokens``, ``flops``,
    ``group``, ``stage``, and as the family trains them ``architecture``, ``steps``, ``name``, ``command``,
    ``hyperparameters``), the budget spent and left, and what it rests on: the prior (``prior``) or the fit
    (``fit``, with ``expected``: the sd of log N_opt before and after the stage, the shrink and the intervals)."""

    target_flops: float
    budget: float
    spent: float
    n_runs: int
    basis: str
    stage: int
    runs: tuple
    stage_flops: float
    budget_left: float
    done: bool
    sentence: str = ""
    prior: dict | None = None
    fit: dict | None = None
    expected: dict | None = None
    left_out: tuple = ()
    hyperparameters: dict | None = None
    family: dict | None = None

    def to_dict(self) -> dict:
        out = {"target_flops": self.target_flops, "budget": self.budget, "spent": self.spent, "n_runs": self.n_runs,
               "basis": self.basis}
        if self.basis == "prior":
            out["prior"] = self.prior
        else:
            out.update(fit=self.fit, expected=self.expected)
        out.update(stage=self.stage, runs=[dict(r) for r in self.runs], stage_flops=self.stage_flops,
                   budget_left=self.budget_left, done=self.done)
        if self.left_out:
            out["left_out"] = list(self.left_out)
        out["sentence"] = self.sentence
        if self.hyperparameters is not None:
            out["hyperparameters"] = self.hyperparameters
        if self.family is not None:
            out["family"] = self.family
        return out

    @classmethod
    def from_dict(cls, plan: dict) -> StagePlan:
        """The typed plan of a `to_dict()`."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in plan.items() if k in names}
        values["runs"] = tuple(plan["runs"])
        values["left_out"] = tuple(plan.get("left_out", ()))
        return cls(**values)
