"""Repeated data at the points: `predict` on a held-out split of the Datablations C4 runs (Muennighoff et al. 2023),
the points given with their unique tokens against the same points taken as fresh data.

Fit on the runs of the lowest 80% of compute (C = 6ND), predict the rest; the data-constrained form is chosen (the
runs carry `unique_tokens`). Needs ../shared/data/datablations_c4.csv (not in this repository).

    python benchmarks/repeated_data.py
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "datablations_c4.csv"


def _write(path: Path, columns: list[str], rows) -> Path:
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(columns)
        out.writerows([f"{v:.10g}" for v in row] for row in rows)
    return path


def main() -> int:
    if not DATA.exists():
        print(f"{DATA} is not here: nothing to measure")
        return 0
    rows = list(csv.DictReader(open(DATA)))
    N, D, U, L = (np.array([float(r[k]) for r in rows]) for k in ("params", "tokens", "unique_tokens", "val_loss"))
    C = 6 * N * D
    fit, held = C <= np.quantile(C, 0.8), C > np.quantile(C, 0.8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = _write(tmp / "runs.csv", ["params", "tokens", "loss", "unique_tokens"],
                      zip(N[fit], D[fit], L[fit], U[fit]))
        points = {"unique tokens given": zip(N[held], D[held], U[held]),
                  "taken as fresh data": zip(N[held], D[held], D[held])}
        print(f"| points | form | MAPE | 80% coverage |  (fit on {fit.sum()} runs, {held.sum()} held out)")
        for label, values in points.items():
            path = _write(tmp / "points.csv", ["params", "tokens", "unique_tokens"], values)
            out = subprocess.run([sys.executable, "-m", "lightning_scaling.cli", "predict", str(runs), "--at",
                                  str(path), "--format", "json"], capture_output=True, text=True, check=True)
            pred = json.loads(out.stdout)
            p, lo, hi = (np.array([r[k] for r in pred]) for k in ("loss", "loss_low", "loss_high"))
            y = L[held]
            print(f"| {label} | {pred[0]['law']} | {100 * np.mean(np.abs(p - y) / y):.2f}% | "
                  f"{np.mean((lo <= y) & (y <= hi)):.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
