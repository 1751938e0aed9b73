"""Closed-loop simulation of the planner (`lightning_scaling.planner.stages`) against known laws.

    python benchmarks/planning.py [--seeds 10] [--target 1e21] [--budget 5e19] [--noise 0.005]

For each true law and seed: start from no runs, ask `plan_stage` for a stage, "train" its runs (the true law's loss
with log-normal noise), refit, repeat until the plan says the budget is spent; then recommend from every run as the
closing hook does (`plan_next_run` with the target as the next budget: N_opt with its 80% interval, the bootstrap
of 1000 replicates widened to where the nested fits put the optimum). Against it, the fixed design: three
isoFLOP groups of five geometric sizes around the prior's optimum (1/8 to 8x), budgets 4x apart, spending the same
budget, fitted and bootstrapped the same way. Reported per law: the median |N_opt / truth - 1|, the share of seeds
whose 80% interval covers the truth, the median interval (high / low), the stages and runs the planner used.

True laws (C = 6ND): Chinchilla (Hoffmann et al. 2022, Eq. 10), Epoch AI's replication of it (Besiroglu et al.
2024: E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658), and a law with a much smaller data exponent
(alpha=0.34, beta=0.20, B=180: optimum at many more tokens per parameter than Chinchilla's, as in
over-trained families) so that the prior is wrong.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_scaling.law.allocation import optimal_allocation  # noqa: E402
from lightning_scaling.law.chinchilla import ChinchillaLaw  # noqa: E402
from lightning_scaling.law.fit import ChinchillaFit  # noqa: E402
from lightning_scaling.planner import FitOptions, NextRunOptions, Runs, StageOptions, advise, stage_plan  # noqa: E402
from lightning_scaling.planner.stages import fixed_design  # noqa: E402
from lightning_scaling.runs.records import RunRecord, Selection  # noqa: E402

LAWS = {
    "chinchilla": ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    "epoch": ChinchillaLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658),
    "data-hungry": ChinchillaLaw(E=1.69, A=406.4, B=180.0, alpha=0.34, beta=0.20),
}
MAX_STAGES = 12


def measure(law, N, D, rng, noise):
    return law.loss(N, D) * np.exp(rng.normal(0.0, noise, len(N)))


def final(N, D, L, target, truth, bootstrap):
    """N_opt at the target with the interval the closing hook reports (`plan_next_run`: the bootstrap widened to
    where the nested fits put the optimum)."""
    records = [RunRecord(run_id=f"r{i}", schema="1", params=n, params_dense=n, tokens=d, flops=6 * n * d, loss=x)
               for i, (n, d, x) in enumerate(zip(N, D, L))]
    advice = advise(Runs.from_selection(Selection(used=records, excluded=[])), FitOptions(n_bootstrap=bootstrap),
                    NextRunOptions(next_flops=target), forms={"chinchilla": ChinchillaFit})
    rec = advice.to_dict()
    n, lo, hi = rec["params"], rec["params_low"], rec["params_high"]
    return {"error": abs(n / truth - 1.0), "covered": bool(lo <= truth <= hi), "ratio": hi / lo if lo > 0 else np.inf}


def planner(law, target, budget, seed, noise, bootstrap):
    rng = np.random.default_rng(seed)
    N, D, L = np.zeros(0), np.zeros(0), np.zeros(0)
    stages = 0
    for _ in range(MAX_STAGES):
        plan = stage_plan(Runs(N=N, D=D, L=L), StageOptions(target_flops=target, budget=budget, n_bootstrap=0))
        if plan.done:
            break
        stages += 1
        newN = np.array([r["params"] for r in plan.runs])
        newD = np.array([r["tokens"] for r in plan.runs])
        N, D = np.concatenate([N, newN]), np.concatenate([D, newD])
        L = np.concatenate([L, measure(law, newN, newD, rng, noise)])
    return {**final(N, D, L, target, truth_opt(law, target), bootstrap), "stages": stages, "runs": len(N),
            "spent": float((6 * N * D).sum()) / budget}


def fixed(law, target, budget, seed, noise, bootstrap):
    rng = np.random.default_rng(seed)
    runs = fixed_design(budget)
    N = np.array([r["params"] for r in runs])
    D = np.array([r["tokens"] for r in runs])
    return {**final(N, D, measure(law, N, D, rng, noise), target, truth_opt(law, target), bootstrap),
            "stages": 1, "runs": len(N), "spent": 1.0}


def truth_opt(law, target):
    return float(optimal_allocation(law.E, law.A, law.B, law.alpha, law.beta, target)[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--target", type=float, default=1e21)
    parser.add_argument("--budget", type=float, default=5e19)
    parser.add_argument("--noise", type=float, default=0.005)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    print(f"target {args.target:.3g} FLOPs, budget {args.budget:.3g}, noise {args.noise:.1%}, {args.seeds} seeds\n")
    print("| law | design | median N_opt error | 80% coverage | median interval (high/low) | stages | runs | budget "
          "spent | s per seed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, law in LAWS.items():
        for label, design in (("planner", planner), ("fixed 3x5", fixed)):
            t0 = time.perf_counter()
            rows = [design(law, args.target, args.budget, seed, args.noise, args.bootstrap)
                    for seed in range(args.seeds)]
            seconds = (time.perf_counter() - t0) / args.seeds
            err = np.median([r["error"] for r in rows])
            cov = np.mean([r["covered"] for r in rows])
            ratio = np.median([r["ratio"] for r in rows])
            print(f"| {name} | {label} | {err:.1%} | {cov:.0%} ({sum(r['covered'] for r in rows)} of {len(rows)}) | "
                  f"{ratio:.2f}x | {np.median([r['stages'] for r in rows]):.0f} | "
                  f"{np.median([r['runs'] for r in rows]):.0f} | {np.median([r['spent'] for r in rows]):.0%} | "
                  f"{seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
