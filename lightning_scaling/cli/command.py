"""One command of the command line, as the table in `lightning_scaling.cli` lists it.

A `Command` names the command and its help, lists its arguments (the shared ones of `cli.options` and its own, in
the order `--help` shows them), and holds `run(args) -> result` and `text(result) -> str`. `render(result, format)`
prints the result as JSON (`--format json`: a typed result, or each of a list, through its `to_dict()`) or as
`text` gives it. A command that hands its whole command line to another parser (`train`, to LightningCLI) has
`forward(argv) -> exit status` instead of `run` and `text`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightning_scaling.cli.options import add_arguments


def plain(result):
    """A typed result as its `to_dict()` (a list of them, each); anything else as it is."""
    if isinstance(result, list):
        return [plain(r) for r in result]
    return result.to_dict() if hasattr(result, "to_dict") else result


def to_json(result) -> str:
    """`result` as indented JSON: a typed result (or a list of them) through `to_dict()`, numpy numbers as floats."""
    return json.dumps(plain(result), indent=2, default=float)


@dataclass(frozen=True)
class Command:
    """A command: `lightning-scaling NAME ARGUMENTS...` runs `run(args)` and prints `render(result, args.format)`."""

    name: str
    help: str
    arguments: tuple = ()
    run: Callable[[argparse.Namespace], Any] | None = None
    text: Callable[[Any], str] | None = None
    epilog: str | None = None
    forward: Callable[[list[str]], int] | None = None

    def add_to(self, subparsers) -> None:
        """Add the command's parser (its help, epilog and arguments) to `subparsers`."""
        parser = subparsers.add_parser(self.name, help=self.help, epilog=self.epilog, add_help=self.forward is None)
        add_arguments(parser, self.arguments)

    def render(self, result, format: str) -> str:
        return to_json(result) if format == "json" else self.text(result)
