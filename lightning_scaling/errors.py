"""The error types of `lightning_scaling`.

One type per kind of mistake, so callers can catch what they can handle:

- `ConfigurationError`: an argument or option with a value outside its allowed range. The message names the
  argument, the allowed values and the value received.
- `ScalingDataError`: run data that cannot be fitted (NaN, inf, non-positive values, missing columns). The
  message names the row or the column.
- `InsufficientRunsError`: too few runs, or too few distinct sizes or token counts, to constrain the law. The
  message says which runs to add; the proposed runs are in `suggestions`.
- `NotFittedError`: a fitted attribute or `predict` used before `fit`.
"""

from __future__ import annotations


class LightningScalingError(Exception):
    """Base class of every error raised on purpose by this package."""


class ConfigurationError(LightningScalingError, ValueError):
    """An argument has a value outside its allowed range."""


class ScalingDataError(LightningScalingError, ValueError):
    """Run data that cannot be fitted; the message names the offending row or column."""


class InsufficientRunsError(ScalingDataError):
    """Too few runs (or distinct sizes / token counts) to constrain the law.

    Attributes:
        suggestions: proposed runs, a list of ``{"params": N, "tokens": D, "flops": C}`` dicts that would best
            constrain the fit.
    """

    def __init__(self, message: str, suggestions: list[dict] | None = None):
        super().__init__(message)
        self.suggestions = list(suggestions or [])


class NotFittedError(LightningScalingError, AttributeError):
    """`predict` or a fitted attribute was used before `fit`."""
