"""The allowed values of the options that the command line, the callbacks and the core share, declared once.

An option's allowed values are a constraint object, declared once per argument beside the code that uses it (a
callback's `_parameter_constraints`, as scikit-learn's estimators declare theirs): `Interval(low, high, closed=...)`,
`Integer(least)`, `Choice.of(SomeLiteral)`, `Resamples()`, `Positive(or_none=...)`, `Flag()`, `Name()`, `Patterns()`.
`validate(constraints, **values)` checks every value with one call and returns them, a number given as text (the
command line's, a YAML file's) converted; a value outside its constraint raises `ConfigurationError` naming the
option, the allowed values and the value received: "`final_sparsity` must be in [0, 1), got 1.2". The command line
turns that error into argparse's, so a YAML value, a Python argument and a command-line flag are refused with the
same words.

The options that take one of a few words are `Literal` types, read with `typing.get_args`, never a parallel tuple.
`check_positive`, `check_open_unit`, `check_confidence`, `check_int` and `check_resamples` are the functional form of
the common constraints, for code that checks one value.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from numbers import Real
from typing import Any, Literal, get_args

from lightning_scaling.errors import ConfigurationError

MIN_RESAMPLES = 10  # fewer bootstrap replicates cannot give a 10th and a 90th percentile apart

# The options that take one of a few words, each declared once.
DecayShape = Literal["exponential", "linear", "1-sqrt"]  # the Power schedule's decay phase
PruningScope = Literal["layer", "global"]  # one sparsity per tensor, or one threshold over all
ParamsBasis = Literal["non_embedding", "total"]  # which parameters N counts
HiddenInit = Literal["fan_in", "fixed"]  # how a model initialises its hidden matrices (for muP's rescaling)
OptimizerKind = Literal["adam", "sgd"]  # muP's learning-rate rules
UseCurves = Literal["auto", "always", "never"]  # whether the planner corrects runs with their loss curves
Parametrization = Literal["mup", "sp"]  # muP or standard parametrization (the coordinate check)


class Constraint:
    """The values one option accepts.

    Args:
        or_none: None is accepted too; a string says what None means ("fitted" gives "... or None (fitted)").
        text: the allowed values in the words the error gives, where the option has its own (default: `describe()`).
    """

    def __init__(self, *, or_none: bool | str = False, text: str | None = None):
        self.or_none = or_none
        self.text = text

    def describe(self) -> str:
        """The allowed values, as the error message gives them ("in [0, 1)")."""
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        """The accepted value (a number given as text converted); raises `ValueError` or `TypeError` otherwise."""
        raise NotImplementedError

    @property
    def allowed(self) -> str:
        words = self.text or self.describe()
        if self.or_none:
            words += " or None" + (f" ({self.or_none})" if isinstance(self.or_none, str) else "")
        return words

    def check(self, name: str, value: Any) -> Any:
        """`value` if allowed (text converted), else `ConfigurationError` naming `name`, the allowed values, `value`."""
        if value is None and self.or_none:
            return None
        try:
            return self.convert(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"`{name}` must be {self.allowed}, got {value!r}") from None


def validate(constraints: Mapping[str, Constraint], **values: Any) -> dict[str, Any]:
    """Check each of `values` against its constraint; return them, text converted, in the order given.

    Raises:
        ConfigurationError: the first value outside its constraint (the message names it).

    Example:
        >>> constraints = {"final_sparsity": Interval(0, 1, closed="left"), "scope": Choice.of(PruningScope)}
        >>> validate(constraints, final_sparsity="0.5", scope="layer")
        {'final_sparsity': 0.5, 'scope': 'layer'}
        >>> validate(constraints, final_sparsity=1.2)
        Traceback (most recent call last):
        ...
        lightning_scaling.errors.ConfigurationError: `final_sparsity` must be in [0, 1), got 1.2
    """
    return {name: constraints[name].check(name, value) for name, value in values.items()}


def _number(value: Any) -> Real:
    """A real number (not a bool; numpy's too) as given, or a number's text as a float."""
    if isinstance(value, str):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(value)
    return value


def _format(bound: float) -> str:
    return f"{bound:g}"


class Interval(Constraint):
    """A finite number between `low` and `high` (None: unbounded); `closed` says which ends are included."""

    def __init__(self, low: float | None, high: float | None,
                 closed: Literal["both", "left", "right", "neither"] = "both", **kwargs):
        super().__init__(**kwargs)
        self.low, self.high, self.closed = low, high, closed

    def comparisons(self) -> list[tuple[str, float]]:
        """The bounds as (operator, bound) pairs, as `jsonargparse.typing.restricted_number_type` takes them."""
        out = []
        if self.low is not None:
            out.append((">=" if self.closed in ("both", "left") else ">", self.low))
        if self.high is not None:
            out.append(("<=" if self.closed in ("both", "right") else "<", self.high))
        return out

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"in {left}{_format(self.low)}, {_format(self.high)}{right}"
        return "a number " + " and ".join(f"{op} {_format(bound)}" for op, bound in self.comparisons())

    def convert(self, value: Any) -> Real:
        number = _number(value)
        if not math.isfinite(number):
            raise ValueError(value)
        for op, bound in self.comparisons():
            if not {">=": number >= bound, ">": number > bound, "<=": number <= bound, "<": number < bound}[op]:
                raise ValueError(value)
        return number


class Positive(Interval):
    """A finite number > 0."""

    def __init__(self, **kwargs):
        super().__init__(0, None, closed="neither", **kwargs)


OPEN_UNIT = Interval(0, 1, closed="neither")  # a probability (an interval's confidence) or a share


class Integer(Constraint):
    """An integer (not a bool, nor a float) of at least `least`, or above `above`; text of an integer converted."""

    def __init__(self, least: int | None = None, *, above: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.least, self.above = least, above

    @classmethod
    def at_least(cls, least: int, **kwargs) -> Integer:
        """An integer of at least `least`, in the words the package's errors have always used for it."""
        return cls(least, text=f"an integer of at least {least}", **kwargs)

    def describe(self) -> str:
        if self.above is not None:
            return f"an integer > {self.above}"
        return f"an integer >= {self.least}" if self.least is not None else "an integer"

    def convert(self, value: Any) -> int:
        if isinstance(value, str):
            number = float(value)
            if not number.is_integer():
                raise ValueError(value)
            value = int(number)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(value)
        value = int(value)
        if (self.least is not None and value < self.least) or (self.above is not None and value <= self.above):
            raise ValueError(value)
        return value


class Resamples(Constraint):
    """Bootstrap replicates: an integer >= `MIN_RESAMPLES`, or 0 for none (when `allow_zero`)."""

    def __init__(self, allow_zero: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.allow_zero = allow_zero

    def describe(self) -> str:
        return ("0 or " if self.allow_zero else "") + f"an integer >= {MIN_RESAMPLES}"

    def convert(self, value: Any) -> int:
        number = _number(value)
        if not float(number).is_integer() or not (number >= MIN_RESAMPLES or (self.allow_zero and number == 0)):
            raise ValueError(value)
        return int(number)


class Choice(Constraint):
    """One of `values`; `Choice.of(SomeLiteral)` reads them from a `Literal` type."""

    def __init__(self, values: tuple, **kwargs):
        super().__init__(**kwargs)
        self.values = tuple(values)

    @classmethod
    def of(cls, literal: Any, **kwargs) -> Choice:
        return cls(get_args(literal), **kwargs)

    def describe(self) -> str:
        return f"one of {self.values}"

    def convert(self, value: Any) -> Any:
        if value not in self.values:  # a tuple's `in` compares with ==: an unhashable value is refused, not an error
            raise ValueError(value)
        return value


class Flag(Constraint):
    """True or False (a bool, not a truthy value)."""

    def describe(self) -> str:
        return "True or False"

    def convert(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise TypeError(value)
        return value


class Name(Constraint):
    """A non-empty string (a metric name, a key)."""

    def describe(self) -> str:
        return "a non-empty string"

    def convert(self, value: Any) -> str:
        if not (isinstance(value, str) and value):
            raise ValueError(value)
        return value


class Patterns(Constraint):
    """A list (or tuple) of strings, such as fnmatch patterns; returned as a list."""

    def describe(self) -> str:
        return "a list of name patterns"

    def convert(self, value: Any) -> list[str]:
        if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
            raise TypeError(value)
        return list(value)


# -- the functional form, for code that checks one value ---------------------------------------------------------
def check_positive(value, name: str, or_none: bool = False) -> float | None:
    """A finite number > 0 (or None, when `or_none`)."""
    number = Positive(or_none=or_none).check(name, value)
    return None if number is None else float(number)


def check_open_unit(value, name: str) -> float:
    """A number in (0, 1): a probability, a share."""
    return float(OPEN_UNIT.check(name, value))


def check_confidence(value, name: str = "confidence") -> float:
    """The central probability of an interval, in (0, 1)."""
    return check_open_unit(value, name)


def check_int(value, name: str, least: int) -> int:
    """An integer (not a bool) of at least `least`."""
    return Integer.at_least(least).check(name, value)


def check_resamples(value, name: str = "bootstrap", allow_zero: bool = True) -> int:
    """Bootstrap replicates: an integer >= 10, or 0 for none (when `allow_zero`)."""
    return Resamples(allow_zero=allow_zero).check(name, value)
