"""Loss curves from a CSV file, for `lightning-scaling forecast`.

Columns: `step`, `lr`, `loss` (required), `tokens` (optional, carried to the output), `params` (optional: the run's
N, the same on each of its rows; with `tokens`, the law across runs' final losses forecasts the run's final loss
too), `run` (optional: several runs in one file) and `curve` (optional: curves of one run that share its weights,
e.g. a cooldown branch). A row
with an empty `loss` is a planned step: the run whose rows have empty losses is the one forecast, the other runs
give the law's shape and calibrate its interval. Every refusal names the line and the column.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from lightning_scaling.errors import ScalingDataError

REQUIRED = ("step", "lr", "loss")


def _number(text: str, line: int, column: str, empty_ok: bool = False) -> float:
    text = (text or "").strip()
    if not text:
        if empty_ok:
            return math.nan
        raise ScalingDataError(f"line {line}: column `{column}` is empty")
    try:
        value = float(text)
    except ValueError:
        raise ScalingDataError(f"line {line}: column `{column}` is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise ScalingDataError(f"line {line}: column `{column}` is {text!r}, not a finite number")
    return value


def read_curves_csv(path) -> tuple[list[dict], list[dict]]:
    """(the target run's curves, the other runs' curves) from a curve CSV (module docstring), each curve a dict of
    `run`, `steps`, `lr`, `loss` (NaN where planned), `tokens` and `params` (None without them): the fields of
    `curves.forecast.Curve`."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise ScalingDataError(f"{path.name}: missing column(s) {', '.join(missing)}; a curve CSV has columns "
                                   "step, lr, loss and optionally tokens, params, run, curve (found: "
                                   f"{', '.join(columns) or 'none'})")
        rows = []
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): v for k, v in raw.items()}
            step = _number(row["step"], line, "step")
            if step < 1 or step != round(step):
                raise ScalingDataError(f"line {line}: column `step` is {row['step']!r}; steps are integers >= 1")
            lr = _number(row["lr"], line, "lr")
            if lr < 0:
                raise ScalingDataError(f"line {line}: column `lr` is {row['lr']!r}; learning rates are >= 0")
            loss = _number(row["loss"], line, "loss", empty_ok=True)
            if not math.isnan(loss) and loss <= 0:
                raise ScalingDataError(f"line {line}: column `loss` is {row['loss']!r}; losses are > 0 (or empty "
                                       "for a planned step)")
            tokens = _number(row.get("tokens", ""), line, "tokens", empty_ok=True) if "tokens" in row else math.nan
            params = _number(row.get("params", ""), line, "params", empty_ok=True) if "params" in row else math.nan
            if params <= 0:
                raise ScalingDataError(f"line {line}: column `params` is {row['params']!r}; a parameter count is > 0")
            run = (row.get("run") or "run").strip() or "run"
            curve = (row.get("curve") or "").strip()
            rows.append((line, run, curve, step, lr, loss, tokens, params))
    if not rows:
        raise ScalingDataError(f"{path.name}: no rows")
    groups: dict[tuple[str, str], list] = {}
    for r in rows:
        groups.setdefault((r[1], r[2]), []).append(r)
    curves = []
    for (run, _curve), rs in groups.items():
        for a, b in zip(rs, rs[1:]):
            if b[3] <= a[3]:
                raise ScalingDataError(f"line {b[0]}: column `step` is {b[3]:g}, not after the previous row of run "
                                       f"{run!r} ({a[3]:g}); sort each run's rows by step")
        tokens = np.array([r[6] for r in rs])
        given = [(r[0], r[7]) for r in rs if not math.isnan(r[7])]
        for line, params in given:
            if params != given[0][1]:
                raise ScalingDataError(f"line {line}: column `params` is {params:g}, not the {given[0][1]:g} of run "
                                       f"{run!r}'s earlier rows; a run has one parameter count")
        curves.append({"run": run, "steps": np.array([r[3] for r in rs]), "lr": np.array([r[4] for r in rs]),
                       "loss": np.array([r[5] for r in rs]), "tokens": None if np.isnan(tokens).all() else tokens,
                       "params": given[0][1] if given else None})
    targets = sorted({c["run"] for c in curves if np.isnan(c["loss"]).any()})
    if not targets:
        raise ScalingDataError(f"{path.name}: no row with an empty `loss`: give the planned rest of the run as rows "
                               "with step, tokens and lr and an empty loss")
    if len(targets) > 1:
        raise ScalingDataError(f"{path.name}: runs {', '.join(map(repr, targets))} all have rows with an empty "
                               "`loss`; forecast one run at a time (the others' rows must all have a loss)")
    return [c for c in curves if c["run"] == targets[0]], [c for c in curves if c["run"] != targets[0]]
