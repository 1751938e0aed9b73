"""The closing hook fitted on final losses alone against final losses and schedule-corrected checkpoints.

    python benchmarks/whole_curve.py [--tracking-uri sqlite:///mlflow.db --experiment tiny-gpt-demo] [--seeds 5]

For each set of runs, `plan_next_run` twice (`use_curves="never"` and `"always"`) and a table of:
- the forward-chaining backtest MAPE of the held-out runs' final losses (`evaluation.backtest`; the same folds and the
  same held-out runs both ways; the checkpoints of held-out runs are never seen);
- the bootstrap interval on N_opt at the same compute (the recommendation's budget), as high / low, with the
  bootstrap drawing whole runs (a run's checkpoints with it);
- the time of each `plan_next_run`.

Suites:
- **store** (with `--tracking-uri`): the runs of an experiment, e.g. the demo's (`make demo` writes
  `sqlite:///mlflow.db`, experiment `tiny-gpt-demo`), read as the closing hook reads them;
- **synthetic**: 20 runs (5 sizes x 300-2400 steps) whose every step follows an annealing law with per-size L0
  (Tissue et al. 2024; alpha 0.4, momentum 0.99), under WSD (20% linear cooldown), the Power schedule (10%
  exponential decay) and cosine, validated 8 times, with 0.3% and 1% noise on each validation, `--seeds` seeds.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_scaling.curves import AnnealingLaw, Curve, schedule_areas  # noqa: E402
from lightning_scaling.planner import plan_next_run  # noqa: E402
from lightning_scaling.runs.records import RunRecord, Selection  # noqa: E402
from lightning_scaling.schedules.lr import PowerSchedule  # noqa: E402

TOKENS_PER_STEP = 4096
MOMENTUM = 0.99
SIZES = (4e5, 1e6, 2.5e6, 6e6, 1.5e7)
STEPS = (300, 600, 1200, 2400)
DECAY = {"wsd": 0.2, "power": 0.1, "cosine": None}


def schedule(T: int, kind: str) -> np.ndarray:
    s = np.arange(1, T + 1)
    warm = np.minimum(s / 50, 1.0)
    if kind == "power":
        p = PowerSchedule(batch_size=8, warmup_tokens=50 * TOKENS_PER_STEP, total_tokens=T * TOKENS_PER_STEP)
        return np.array([p.lr(i * TOKENS_PER_STEP) for i in s])
    if kind == "cosine":
        return np.where(s < 50, warm, 0.5 * (1 + np.cos(np.pi * (s - 50) / (T - 50)))) * 1e-3
    decay = int(DECAY["wsd"] * T)
    return np.where(s > T - decay, (T - s) / decay, warm) * 1e-3


def synthetic(kind: str, noise: float, seed: int):
    """(Selection, curves) of the synthetic suite (module docstring)."""
    rng = np.random.default_rng(seed)
    S1, S2 = schedule_areas(np.arange(1, 3001), schedule(3000, kind), MOMENTUM)
    A, C = float(S1[-1]) ** 0.4, 0.15 / float(S2[-1])
    records, curves = [], []
    for j, (n, T) in enumerate((n, T) for n in SIZES for T in STEPS):
        law = AnnealingLaw(L0=2.0 + 60.0 / n**0.3, A=A, C=C, alpha=0.4, momentum=MOMENTUM)
        lr = schedule(T, kind)
        S1, S2 = schedule_areas(np.arange(1, T + 1), lr, MOMENTUM)
        loss = law.loss(S1, S2) * np.exp(rng.normal(0.0, noise, T))
        val = np.arange(T // 8, T + 1, T // 8)
        val[-1] = T
        steps = np.union1d(np.arange(10, T + 1, 10), val)
        observed = np.where(np.isin(steps, val), loss[steps - 1], np.nan)
        curves.append(Curve(f"r{j}", steps, lr[steps - 1], observed))
        config = {"scaling/power_decay_fraction": str(DECAY[kind])} if DECAY[kind] else {}
        records.append(RunRecord(run_id=f"r{j}", run_name=f"r{j}", schema="1", params=n, params_dense=n,
                                 tokens=float(T * TOKENS_PER_STEP), flops=6.0 * n * T * TOKENS_PER_STEP,
                                 loss=float(loss[T - 1]), config=config))
    return Selection(used=records, excluded=[]), curves


def compare(selection, curves, bootstrap: int) -> dict:
    out = {}
    for mode in ("never", "always"):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec = plan_next_run(selection, n_bootstrap=bootstrap, curves=curves, use_curves=mode)
        seconds = time.perf_counter() - t0
        out[mode] = rec
        out[mode + "_s"] = seconds
    rec = out["always"]
    data = rec.get("data", {})
    iv = data.get("params_interval") or {}
    return {"status": rec.get("status"), "runs": rec.get("n_runs"), "checkpoints": data.get("checkpoint_points"),
            "mape_final": (data.get("backtest_mape") or {}).get("final_only"),
            "mape_curve": (data.get("backtest_mape") or {}).get("whole_curve"),
            "ratio_final": iv.get("final_only_ratio"), "ratio_curve": iv.get("whole_curve_ratio"),
            "params_final": out["never"].get("params"), "params_curve": rec.get("params"),
            "auto": plan_next_run(selection, n_bootstrap=0, curves=curves)["data"]["used"],
            "seconds": (out["never_s"], out["always_s"])}


def row(name, r) -> str:
    f = lambda x, fmt: (fmt % x) if isinstance(x, (int, float)) and x is not None else "-"  # noqa: E731
    return (f"| {name} | {r['runs']} | {r['checkpoints']} | {f(r['mape_final'], '%.2f%%')} | "
            f"{f(r['mape_curve'], '%.2f%%')} | {f(r['ratio_final'], '%.2fx')} | {f(r['ratio_curve'], '%.2fx')} | "
            f"{f(r['params_final'], '%.3g')} | {f(r['params_curve'], '%.3g')} | "
            f"{'whole curves' if r['auto'].startswith('final losses and') else 'final losses'} | "
            f"{r['seconds'][0]:.1f} / {r['seconds'][1]:.1f} |")


HEADER = ("| runs | n | checkpoints | backtest MAPE, final only | ... whole curve | "
          "N_opt interval (high/low), final only | ... whole curve | N_opt final only | N_opt whole curve | auto uses "
          "| seconds (final / whole) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default="tiny-gpt-demo")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--no-synthetic", action="store_true")
    args = parser.parse_args(argv)
    print(HEADER)
    if args.tracking_uri:
        from lightning_scaling.integrations.mlflow_store import MLflowRunStore

        store = MLflowRunStore(args.tracking_uri, experiment_name=args.experiment)
        selection = store.select()
        curves = store.curves(selection, dense_lr=True, stopped=False)
        print(row(f"store: {args.experiment}", compare(selection, curves, args.bootstrap)), flush=True)
    if args.no_synthetic:
        return
    for kind in ("wsd", "power", "cosine"):
        for noise in (0.003, 0.01):
            results = [compare(*synthetic(kind, noise, seed), args.bootstrap) for seed in range(args.seeds)]
            for seed, r in enumerate(results):
                print(row(f"{kind}, noise {noise:.1%}, seed {seed}", r), flush=True)
            med = {k: float(np.median([r[k] for r in results])) for k in
                   ("mape_final", "mape_curve", "ratio_final", "ratio_curve", "params_final", "params_curve")}
            wins = sum(r["mape_curve"] < r["mape_final"] for r in results)
            narrower = sum(r["ratio_curve"] < r["ratio_final"] for r in results)
            print(f"| **{kind}, noise {noise:.1%}: median** | | | {med['mape_final']:.2f}% | {med['mape_curve']:.2f}% "
                  f"| {med['ratio_final']:.2f}x | {med['ratio_curve']:.2f}x | | | whole curve better in {wins} of "
                  f"{len(results)}, interval narrower in {narrower} | |", flush=True)


if __name__ == "__main__":
    main()
