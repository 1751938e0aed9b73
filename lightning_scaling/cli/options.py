"""The command line's arguments, each defined once: a command lists the ones it takes (`Command.arguments`).

An `Argument` is the flags and `add_argument` keywords of one argparse argument; `.but(...)` gives a command its own
default or help without a second definition. A tuple of arguments is added in order (`--tracking-uri`, `--experiment`,
`--loss-key` and `--stale-after` always travel together as `TRACKING`), and an `Exclusive` group adds a mutually
exclusive group. The values are checked by `lightning_scaling.options`, the checks the callbacks use too, their
`ConfigurationError` turned into argparse's error (exit status 2, the usage line and the message).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.options import check_confidence, check_positive, check_resamples
from lightning_scaling.runs import STALE_AFTER_S

EPILOG = ("CSV columns: params, tokens, loss; optional flops, params_avg (used as N when present), run_id, "
          "unique_tokens (lets the data-constrained law form compete).")


def _argument_type(check: Callable) -> Callable[[str], Any]:
    """An argparse `type` from a check of `lightning_scaling.options`: its error message, as argparse's."""

    def convert(text: str):
        try:
            return check(text, "value")
        except ConfigurationError as err:
            raise argparse.ArgumentTypeError(str(err).replace("`value` ", "")) from None

    return convert


positive_float = _argument_type(check_positive)
resamples = _argument_type(check_resamples)
confidence = _argument_type(check_confidence)


def momentum(text: str) -> float:
    """The annealing momentum lam of `forecast`, in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


@dataclass(frozen=True)
class Argument:
    """One argparse argument: its flags (or positional name) and its `add_argument` keywords."""

    flags: tuple[str, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)

    def but(self, **changes) -> Argument:
        """The same argument with some keywords changed (a command's own default or help)."""
        return Argument(self.flags, MappingProxyType({**self.settings, **changes}))

    def add_to(self, parser) -> None:
        parser.add_argument(*self.flags, **self.settings)


@dataclass(frozen=True)
class Exclusive:
    """Arguments of which a command line may give at most one (argparse's mutually exclusive group)."""

    arguments: tuple[Argument, ...]

    def add_to(self, parser) -> None:
        group = parser.add_mutually_exclusive_group()
        for argument in self.arguments:
            argument.add_to(group)


def argument(*flags: str, **settings) -> Argument:
    return Argument(tuple(flags), MappingProxyType(settings))


def add_arguments(parser, arguments) -> None:
    """Add `arguments` (arguments, exclusive groups, tuples of either, in order) to `parser`."""
    for item in arguments:
        if isinstance(item, tuple):
            add_arguments(parser, item)
        else:
            item.add_to(parser)


# -- the shared arguments -----------------------------------------------------------------------------------------
RUNS = argument("runs", metavar="RUNS.csv", help="runs to fit. " + EPILOG)
FORMAT = argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
BOOTSTRAP = argument("--bootstrap", type=resamples, default=0, metavar="K",
                     help="bootstrap replicates for percentile intervals (0: none; 1000 is a good choice)")
SEED = argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)")
CONFIDENCE = argument("--confidence", type=confidence, default=0.8,
                      help="central probability of the intervals (default 0.8: 10th to 90th percentile)")
# `backtest`, `predict` and `forecast` give it without the default spelled out
CONFIDENCE_BRIEF = CONFIDENCE.but(help="central probability of the intervals")
# the commands that read runs and report intervals on them: the CSV, then these three (`fit`, `recommend`, `demo`)
INTERVALS = (BOOTSTRAP, SEED, CONFIDENCE)
LAW = argument("--law", default="auto", metavar="auto|NAME",
               help="law form: 'auto' (default) chooses by forward-chaining error among the registered forms "
               "(chinchilla, exponent_interaction, data_constrained with unique_tokens, plugins' forms)")
# the runs from an MLflow experiment instead of a CSV, read as the closing hook reads them
TRACKING = (
    argument("--tracking-uri", metavar="URI", help="MLflow tracking URI, e.g. sqlite:///mlflow.db"),
    argument("--experiment", metavar="NAME", help="MLflow experiment name"),
    argument("--loss-key", default="val_loss", help="metric holding each run's final loss (default val_loss)"),
    argument("--stale-after", type=positive_float, default=STALE_AFTER_S, metavar="S",
             help=f"a RUNNING run with no new metric for S seconds is left out as stale (default {STALE_AFTER_S:g})"),
)
