"""The planner's options, one frozen dataclass per group, each checked once in `__post_init__` with the package's
constraints (`lightning_scaling.options`), declared once per field in `_parameter_constraints`: an error names
the field, the allowed values and the value received.

- `FitOptions`: how the law is fitted and how sure it is (bootstrap replicates, seed, confidence, which law form,
  whether the runs' checkpoints join the fit).
- `NextRunOptions`: the budget of the next run (an explicit `next_flops`, or `growth` times the largest compute
  logged so far) and the pruning schedule it will use.
- `StageOptions`: the sweep's plan (the target compute, the compute for small runs, the first stage's shape, the
  shortest run, and the bootstrap of the interval on N_opt at the target).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.law.form import DEFAULT_CONFIDENCE
from lightning_scaling.options import (
    OPEN_UNIT,
    Choice,
    Constraint,
    Integer,
    Interval,
    Name,
    Positive,
    Resamples,
    UseCurves,
    validate,
)

AUTO = "auto"  # `law`: choose the form by forward-chaining error among those the runs can feed
DEFAULT_GROWTH = 4.0  # each run 4x the compute of the largest so far: big enough to learn, small enough to be safe
DEFAULT_BOOTSTRAP = 1000  # replicates of the next run's intervals (Epoch's replication of Chinchilla uses 4000)
PLAN_BOOTSTRAP = 200  # replicates of the plan's interval on N_opt at the target: it only ranks stages
GROUP_SIZE = 5  # the first stage's sizes per isoFLOP group (Hoffmann et al. 2022 used 9 or more; 5 fit a parabola)
FIRST_GROUPS = 3
FIRST_SHARE = 0.1  # the first stage spends a tenth of the budget (a quarter left less for the stages the fit chooses)
MIN_GROUP = 3  # a group has at least three new sizes (the parabola of Approach 2)
MIN_STEPS = 100  # a planned run shorter than this many optimizer steps is left out


@dataclass(frozen=True)
class FitOptions:
    """How the law is fitted.

    Args:
        n_bootstrap: bootstrap replicates for the intervals (0 for none; else at least 10).
        seed: of the bootstrap.
        confidence: central probability of the intervals, in (0, 1).
        law: "auto" (choose among the forms given by forward-chaining error, `evaluation.backtest.choose_form`) or
            the name of one form.
        use_curves: "auto": the runs' schedule-corrected checkpoints join the fit when the forward-chaining backtest
            predicts held-out final losses better with them; "always"; "never".
    """

    n_bootstrap: int = DEFAULT_BOOTSTRAP
    seed: int = 0
    confidence: float = DEFAULT_CONFIDENCE
    law: str = AUTO
    use_curves: UseCurves = "auto"

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "n_bootstrap": Resamples(),
        "seed": Integer(),
        "confidence": OPEN_UNIT,
        "law": Name(text=f"'{AUTO}' or the name of a law form"),
        "use_curves": Choice.of(UseCurves),
    }

    def __post_init__(self):
        _validate_fields(self)


@dataclass(frozen=True)
class NextRunOptions:
    """The next run's budget and pruning.

    Args:
        next_flops: the next run's compute (C = 6ND), a number > 0; None: `growth` x the largest 6ND logged.
        growth: see `next_flops`, a number > 0.
        pruning: the pruning schedule the next run will use ({"final_sparsity", "start_fraction", "end_fraction",
            "prunable_fraction"}): the initial dense size of the sparse next run is reported too.
    """

    next_flops: float | None = None
    growth: float = DEFAULT_GROWTH
    pruning: dict | None = None

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {"next_flops": Positive(or_none=True),
                                                               "growth": Positive()}

    def __post_init__(self):
        _validate_fields(self)
        if self.pruning is not None and not isinstance(self.pruning, dict):
            raise ConfigurationError(f"`pruning` must be a dict of the pruning schedule or None, got {self.pruning!r}")


@dataclass(frozen=True)
class StageOptions:
    """The sweep's plan (`planner.stages`).

    Args:
        target_flops: the compute of the run to size in the end (C = 6ND), a number > 0.
        budget: the compute to spend on small runs, all stages together (the runs so far count against it), a
            number > 0 below `target_flops`.
        min_steps: the shortest run planned, in optimizer steps (when the family's tokens per step are known).
        first_share, first_groups, group_size: the first stage, planned before the runs allow a fit: its share of
            the budget, in (0, 1), its isoFLOP groups (at least 1) and sizes per group (at least `MIN_GROUP`).
        n_bootstrap, seed, confidence: of the current interval on N_opt at the target.
    """

    target_flops: float
    budget: float
    min_steps: int = MIN_STEPS
    first_share: float = FIRST_SHARE
    first_groups: int = FIRST_GROUPS
    group_size: int = GROUP_SIZE
    n_bootstrap: int = PLAN_BOOTSTRAP
    seed: int = 0
    confidence: float = 0.8

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "target_flops": Positive(),
        "budget": Positive(),
        "min_steps": Integer.at_least(1),
        "first_share": OPEN_UNIT,
        "first_groups": Integer.at_least(1),
        "group_size": Integer.at_least(MIN_GROUP),
        "n_bootstrap": Resamples(),
        "seed": Integer(),
        "confidence": OPEN_UNIT,
    }

    def __post_init__(self):
        _validate_fields(self)
        if self.budget >= self.target_flops:
            raise ConfigurationError(f"`budget` ({self.budget:.3g}) must be below `target_flops` "
                                     f"({self.target_flops:.3g}): the small runs are there to size the target run")


def _validate_fields(options) -> None:
    """Check the fields of a frozen options dataclass against its `_parameter_constraints`, text converted and the
    numbers of an interval as floats."""
    constraints = options._parameter_constraints
    values = validate(constraints, **{name: getattr(options, name) for name in constraints})
    for name, value in values.items():
        is_number = isinstance(constraints[name], Interval) and value is not None
        object.__setattr__(options, name, float(value) if is_number else value)


def split_options(values: dict, *groups: type) -> list[dict]:
    """`values` (keyword arguments) split by the fields of each option class in `groups`.

    Raises:
        ConfigurationError: a name that is no field of any group (the message lists the allowed names).
    """
    names = [{f.name for f in fields(g)} for g in groups]
    unknown = sorted(set(values) - set().union(*names))
    if unknown:
        allowed = sorted(set().union(*names))
        raise ConfigurationError(f"unknown option(s) {unknown}: the allowed options are {allowed}")
    return [{k: v for k, v in values.items() if k in group} for group in names]
