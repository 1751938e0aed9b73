"""The `lightning-scaling` command line: thin wrappers that load runs, fit, and print.

    lightning-scaling fit RUNS.csv [--format json|text] [--bootstrap K] [--seed S] [--confidence P]
    lightning-scaling recommend RUNS.csv --flops C [--law auto|NAME] [--format json|text] [--bootstrap K] [--seed S]
    lightning-scaling recommend --tracking-uri URI --experiment NAME [--flops C | --growth G] [--law auto|NAME]
        [--publish]
    lightning-scaling runs --tracking-uri URI --experiment NAME [--format json|text]
    lightning-scaling backtest RUNS.csv | --tracking-uri URI --experiment NAME [--law auto|NAME] [--confidence P]
    lightning-scaling predict RUNS.csv --at POINTS.csv [--law auto|NAME] [--confidence P] [--format json|text]
    lightning-scaling forecast CURVE.csv [--tracking-uri URI --experiment NAME] [--confidence P] [--format json|text]
    lightning-scaling plan [RUNS.csv | --tracking-uri URI --experiment NAME] --target-flops C --budget B
        [--config FAMILY.yaml] [--format json|text]
    lightning-scaling sweep --config SWEEP.yaml [--target-flops C --budget B] [--executor local|slurm|ray]
        [--workers K] [--tracking-uri URI --experiment NAME] [--train-target]
    lightning-scaling demo [--format json|text]
    lightning-scaling coord-check --config CONFIG.yaml [--out DIR] [--format json|text]
    lightning-scaling train --config CONFIG.yaml [LightningCLI options]   (LightningCLI's `fit`)

Exit status: 0 on success, 2 on bad input (the message names the column, row or option).

`COMMANDS` is the one table of commands, in the order `--help` lists them. Each entry is a `cli.command.Command`:
its name and help, its arguments (the shared ones defined once in `cli.options`, then its own), `run(args) -> result`
and `text(result) -> str`; `--format json` prints the result as JSON. To add a command, write its `run` and `text` in
the module of its group (`cli.fitting`: fit, recommend, runs, backtest, predict; `cli.forecast`; `cli.plan`;
`cli.tools`: demo, train, coord-check), declare its `Command` there and list it below. `main` parses the command line,
looks the command up, runs it and prints what it renders. The heavy stacks (MLflow, Lightning, torch) are imported
only by `cli.deferred`, when a command that needs them runs.
"""

from __future__ import annotations

import argparse
import sys

from lightning_scaling.cli.command import Command
from lightning_scaling.cli.fitting import BACKTEST, FIT, PREDICT, RECOMMEND, RUNS_COMMAND
from lightning_scaling.cli.forecast import FORECAST
from lightning_scaling.cli.plan import PLAN
from lightning_scaling.cli.sweep import SWEEP
from lightning_scaling.cli.tools import COORD_CHECK, DEMO, TRAIN
from lightning_scaling.errors import LightningScalingError
from lightning_scaling.runs import redact

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

COMMANDS: dict[str, Command] = {command.name: command for command in (
    FIT, RECOMMEND, RUNS_COMMAND, BACKTEST, PREDICT, FORECAST, PLAN, SWEEP, DEMO, TRAIN, COORD_CHECK)}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in `COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="lightning-scaling",
        description="Fit the scaling law L(N, D) = E + A/N^alpha + B/D^beta to training runs and recommend "
        "the next run's size.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        command.add_to(sub)
    return parser


def main(argv=None) -> int:
    """Run the command line `argv` (default `sys.argv[1:]`); return the exit status (2 on bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    forwarded = COMMANDS.get(argv[0]) if argv else None
    if forwarded is not None and forwarded.forward is not None:
        return forwarded.forward(argv[1:])
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.command]
    try:
        result = command.run(args)
    except (LightningScalingError, OSError) as err:
        print(redact(f"lightning-scaling {args.command}: error: {err}"), file=sys.stderr)
        return 2
    print(command.render(result, getattr(args, "format", "text")))
    return 0
