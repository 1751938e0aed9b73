"""Predictions against the truth: held-out runs of published scaling suites, and synthetic degenerate cases.

    python benchmarks/truth.py [--data ../shared/data] [--confidence 0.8]

1. Each reference set (the Gadre file's data sets separately) is split by compute C = 6ND: the law is fitted on
   the lowest 80% of the runs and predicts the rest. For the plain Chinchilla fit and for the form the advisor
   chooses (`evaluation.backtest.choose_form` over the registered forms, on the 80% only), the table gives the MAPE
   on the held-out 20%, and for the chosen form the coverage and median relative width of the calibrated prediction
   intervals (`evaluation.intervals`, calibrated on the 80% only), beside the bootstrap-only interval (the mean law's
   uncertainty) the project gave before.
2. The isoFLOP check: where the held-out runs form isoFLOP groups, the chosen form's compute-optimal N at each
   group's budget against the minimum of the group's parabola in log N.
3. Synthetic degenerate cases: the fit must refuse them (or flag them) and, at a bound, reach the box optimum that
   plain L-BFGS-B finds from 400 random starts.
4. `lightning-scaling backtest` on chinchilla_epoch, timed as one command (the median of 3).

Nothing here is tuned on these sets; the interval and selection rules are fixed in the package.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.hoffmann_grid import hoffmann_grid_fit, random_box_starts  # noqa: E402
from lightning_scaling import ChinchillaFit  # noqa: E402
from lightning_scaling.evaluation.backtest import choose_form  # noqa: E402
from lightning_scaling.evaluation.intervals import calibrate  # noqa: E402
from lightning_scaling.law import isoflop_groups  # noqa: E402
from lightning_scaling.planner import plan_next_run  # noqa: E402
from lightning_scaling.plugins import law_forms  # noqa: E402
from lightning_scaling.runs import RunRecord, Selection  # noqa: E402


def load_sets(data: Path) -> dict[str, dict]:
    """name -> {"N", "D", "L", and "unique_tokens" where the set gives it}."""
    sets = {}

    def rows(name):
        with open(data / name, newline="") as fh:
            return list(csv.DictReader(fh))

    def cols(rs, *keys):
        return [np.array([float(r[k]) for r in rs]) for k in keys]

    N, D, L = cols(rows("chinchilla_epoch.csv"), "params", "tokens", "loss")
    sets["chinchilla_epoch"] = {"N": N, "D": D, "L": L}
    N, C, L = cols(rows("chinchilla_epoch_raw.csv"), "Model Size", "Training FLOP", "loss")
    sets["chinchilla_epoch_raw"] = {"N": N, "D": C / (6 * N), "L": L}
    gadre = rows("gadre2024_open_lm.csv")
    for ds in sorted({r["dataset"] for r in gadre}):
        N, D, L = cols([r for r in gadre if r["dataset"] == ds], "params", "train_tokens", "loss_c4_val")
        sets[f"gadre_{ds}"] = {"N": N, "D": D, "L": L}
    N, D, L, U = cols(rows("datablations_c4.csv"), "params", "tokens", "val_loss", "unique_tokens")
    sets["datablations"] = {"N": N, "D": D, "L": L, "unique_tokens": U}
    for name in ("hot", "cooldown"):
        with open(data / "gemstones" / f"{name}.jsonl") as fh:
            recs = [json.loads(line) for line in fh]
        sets[f"gemstones_{name}"] = {k: np.array([float(r[c]) for r in recs])
                                    for k, c in (("N", "params_active_precise"), ("D", "tokens"), ("L", "final_loss"))}
    return sets


def candidate_forms(has_unique: bool) -> dict:
    forms = law_forms()
    return {name: f for name, f in forms.items()
            if has_unique or "unique_tokens" not in getattr(f, "extra_fields", ())}


def held_out(s: dict, confidence: float) -> dict:
    N, D, L = s["N"], s["D"], s["L"]
    extra = {"unique_tokens": s["unique_tokens"]} if "unique_tokens" in s else None
    order = np.argsort(6 * N * D, kind="stable")
    k = int(round(0.8 * len(N)))
    tr, te = order[:k], order[k:]
    ex_tr = {key: v[tr] for key, v in extra.items()} if extra else None
    ex_te = {key: v[te] for key, v in extra.items()} if extra else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = ChinchillaFit().fit(N[tr], D[tr], L[tr])
        boot = plain.bootstrap(200, seed=0, confidence=confidence)
        forms = candidate_forms(extra is not None)
        choice = choose_form(forms, N[tr], D[tr], L[tr], extra=ex_tr)
        cal = calibrate(forms[choice["chosen"]], N[tr], D[tr], L[tr], confidence, extra=ex_tr)
    chosen = cal.fits[-1]
    kw = {k: v for k, v in (ex_te or {}).items() if k in getattr(chosen, "extra_fields", ())}
    pred = np.asarray(chosen.predict(N[te], D[te], **kw), float)
    lo, hi = cal.interval(N[te], D[te], extra=kw or None)
    b_lo, b_hi = np.array([boot.loss_interval(n, d) for n, d in zip(N[te], D[te])]).T
    plain_pred = plain.predict(N[te], D[te])
    iso = []
    for g in isoflop_groups(N[te], D[te], L[te])[0]:
        iso.append(chosen.compute_optimal(g.flops).params / g.params_opt)
    return {"runs": len(N), "held": len(te), "chosen": choice["chosen"],
            "mape_plain": 100 * float(np.mean(np.abs(plain_pred - L[te]) / L[te])),
            "mape_chosen": 100 * float(np.mean(np.abs(pred - L[te]) / L[te])),
            "coverage": 100 * float(np.mean((L[te] >= lo) & (L[te] <= hi))),
            "width": 100 * float(np.median((hi - lo) / pred)),
            "boot_coverage": 100 * float(np.mean((L[te] >= b_lo) & (L[te] <= b_hi))),
            "iso_ratio": iso}


def synthetic_cases() -> dict:
    grid = np.meshgrid(np.geomspace(1e7, 1e9, 5), np.geomspace(1e9, 1e11, 5))
    N, D = grid[0].ravel(), grid[1].ravel()

    def noisy(L, seed, sd):
        return L * np.exp(np.random.default_rng(seed).normal(0, sd, L.size))

    return {
        "no N dependence": (N, D, noisy(1.8 + 400 / D**0.3, 0, 0.005)),
        "no D dependence": (N, D, noisy(1.8 + 400 / N**0.3, 3, 0.005)),
        "beta -> 0": (N, D, noisy(1.8 + 400 / N**0.3 + 0.5 / D**0.002, 1, 0.003)),
        "alpha beyond 3": (N, D, noisy(1.8 + 1e30 / N**4 + 400 / D**0.3, 2, 0.003)),
    }


def box_optimum(N, D, L, starts=400, exponent_max=3.0) -> float:
    """The best objective of plain L-BFGS-B from `starts` random starts in the search box."""
    return hoffmann_grid_fit(N, D, L, starts=random_box_starts(starts, exponent_max), exponent_max=exponent_max)[1]


def degenerate_row(name, N, D, L) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ChinchillaFit().fit(N, D, L)
        records = [RunRecord(run_id=f"r{i}", schema="1", params=n, params_dense=n, tokens=d, flops=6 * n * d, loss=x)
                   for i, (n, d, x) in enumerate(zip(N, D, L))]
        rec = plan_next_run(Selection(records, []), n_bootstrap=0, law_forms={"chinchilla": ChinchillaFit})
    box = box_optimum(N, D, L)
    return {"case": name, "status": rec["status"],
            "flags": ", ".join(f"{d['parameter']} {d['kind']}" for d in fit.degenerate_) or "-",
            "objective": fit.objective_, "box": box, "gap": fit.objective_ / box - 1}


def time_backtest(data: Path, repeats: int = 3) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.csv"
        s = load_sets(data)["chinchilla_epoch"]
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["params", "tokens", "loss"])
            w.writerows(zip(s["N"], s["D"], s["L"]))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lightning_scaling.cli", "backtest", str(path), "--format", "json"],
                           check=True, capture_output=True, cwd=ROOT)
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--confidence", type=float, default=0.8)
    args = parser.parse_args()
    data = Path(args.data)
    pct = int(round(100 * args.confidence))
    print(f"held-out top 20% by C = 6ND (fit on the lowest 80%), {pct}% intervals")
    print("| set | runs | held out | chosen form | MAPE Chinchilla | MAPE chosen | coverage | median width "
          "| bootstrap-only coverage | N_opt law / isoFLOP |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, s in load_sets(data).items():
        r = held_out(s, args.confidence)
        iso = ", ".join(f"{x:.2f}" for x in r["iso_ratio"]) or "-"
        print(f"| {name} | {r['runs']} | {r['held']} | {r['chosen']} | {r['mape_plain']:.2f}% | "
              f"{r['mape_chosen']:.2f}% | {r['coverage']:.1f}% | {r['width']:.2f}% | {r['boot_coverage']:.1f}% "
              f"| {iso} |")
    print()
    print("synthetic degenerate cases (5x5 grid N 1e7..1e9, D 1e9..1e11, log-normal noise)")
    print("| case | recommendation | flagged | objective | box optimum (400 L-BFGS-B starts) | gap |")
    print("|---|---|---|---|---|---|")
    for name, (N, D, L) in synthetic_cases().items():
        r = degenerate_row(name, N, D, L)
        print(f"| {name} | {r['status']} | {r['flags']} | {r['objective']:.6e} | {r['box']:.6e} | {r['gap']:+.2%} |")
    print()
    print(f"`lightning-scaling backtest` on chinchilla_epoch (240 runs, with intervals): "
          f"median of 3 = {time_backtest(data):.2f} s")


if __name__ == "__main__":
    main()
