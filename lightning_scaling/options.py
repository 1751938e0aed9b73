"""The allowed values of the options that the command line, the callbacks and the core share, checked in one place.

Each check returns the value (converted from text when the command line gives text) or raises `ConfigurationError`
naming the option, the allowed values and the value received. The command line turns that error into argparse's;
the callbacks call the same checks in `__init__`, so a YAML value, a Python argument and a command-line flag are
refused with the same words.
"""

from __future__ import annotations

import math

from lightning_scaling.errors import ConfigurationError

MIN_RESAMPLES = 10  # fewer bootstrap replicates cannot give a 10th and a 90th percentile apart


def _number(value, name: str, kind: str):
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ConfigurationError(f"`{name}` must be {kind}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"`{name}` must be {kind}, got {value!r}")
    return value


def check_positive(value, name: str, or_none: bool = False) -> float | None:
    """A finite number > 0 (or None, when `or_none`)."""
    allowed = "a number > 0" + (" or None" if or_none else "")
    if value is None and or_none:
        return None
    number = _number(value, name, allowed)
    if not (math.isfinite(number) and number > 0):
        raise ConfigurationError(f"`{name}` must be {allowed}, got {value!r}")
    return float(number)


def check_open_unit(value, name: str) -> float:
    """A number in (0, 1): a probability, a share."""
    number = _number(value, name, "in (0, 1)")
    if not 0.0 < number < 1.0:
        raise ConfigurationError(f"`{name}` must be in (0, 1), got {value!r}")
    return float(number)


def check_confidence(value, name: str = "confidence") -> float:
    """The central probability of an interval, in (0, 1)."""
    return check_open_unit(value, name)


def check_int(value, name: str, least: int) -> int:
    """An integer (not a bool) of at least `least`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigurationError(f"`{name}` must be an integer of at least {least}, got {value!r}")
    return value


def check_resamples(value, name: str = "bootstrap", allow_zero: bool = True) -> int:
    """Bootstrap replicates: an integer >= 10, or 0 for none (when `allow_zero`)."""
    allowed = ("0 or " if allow_zero else "") + f"an integer >= {MIN_RESAMPLES}"
    number = _number(value, name, allowed)
    if not float(number).is_integer() or not (number >= MIN_RESAMPLES or (allow_zero and number == 0)):
        raise ConfigurationError(f"`{name}` must be {allowed}, got {value!r}")
    return int(number)
