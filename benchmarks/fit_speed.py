"""Fit speed: the engine against the 4500-start reference loop and the `chinchilla` package, in one run.

On the 240 Chinchilla runs of the Epoch replication (`../shared/data/chinchilla_epoch.csv`: params, tokens, flops,
loss), side by side:

1. engine: `ChinchillaFit().fit(N, D, loss)`, wall time as the median of `--repeats` fits (time.perf_counter);
2. loop: `hoffmann_grid_fit(N, D, loss)`, the reference method: scipy L-BFGS-B with the analytic gradient from every
   start of the 4500-start grid of Hoffmann et al. 2022 (Besiroglu et al. 2024), best kept; timed once;
3. the `chinchilla` package (PyPI 0.2.0, Kyo Takano): its documented way to fit given runs is a project folder
   holding `df.csv` (columns C, N, D, loss) and `Chinchilla(folder, param_grid=...).fit()`. Its fitting defaults are
   kept: loss_fn = asymmetric MAE on the loss (errors where the law over-predicts weigh 10x: it fits the floor of
   the runs, not the Huber objective), scipy BFGS with finite-difference gradients, float128 arithmetic, one start
   per grid point over `multiprocessing.Pool(os.cpu_count())`. It has no default grid (the argument is required),
   so it gets the same 4500-start grid as the loop, in its log parametrisation: e = log E in {-1, -0.5, ..., 1},
   a = log A and b = log B in {0, 5, ..., 25}, alpha and beta in {0, 0.5, ..., 2}. Its wall time is that of
   `fit()`; its parameters are scored with this package's objective (`huber_objective`, theta = (log A, log B,
   log E, alpha, beta));
4. bootstrap: `bootstrap(fit, n_resamples=1000, seed=0)` on the engine's fit, median of 3.

Every method is also fitted on the 80% lowest-compute runs (by the flops column) and scored on the other 20%:
mean absolute relative error of the predicted loss (MARE) and RMSE of log loss.

BLAS threads. Everything runs with BLAS limited to one thread (`--blas-threads 1`, through threadpoolctl when it
is installed). L-BFGS-B calls BLAS on 5x5 matrices at every iteration; with OpenBLAS's default of one thread per
core, a loaded 2-core machine made each start up to 100x slower (threads waiting on each other), which would
inflate the loop's time and the speedup. One thread is the loop's best case, so the speedup quoted is conservative.

Run from the repository root:

    python benchmarks/fit_speed.py           # everything: 10 to 20 minutes on a shared 2-core machine
    python benchmarks/fit_speed.py --quick   # engine and bootstrap only (skips the loop and the package), < 1 min

The data are read from ../shared/data/ next to the repository; without it the script says so and exits.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import scipy

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.hoffmann_grid import HOFFMANN_GRID, hoffmann_grid_fit  # noqa: E402
from lightning_scaling import ChinchillaFit, ChinchillaLaw  # noqa: E402
from lightning_scaling.law import huber_objective  # noqa: E402
from lightning_scaling.law.bootstrap import bootstrap  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "chinchilla_epoch.csv"
HELD_OUT_FRACTION = 0.2
# Besiroglu et al. 2024, plain Huber fit from the 4500-start grid on these 240 runs (../shared/data/README.md).
PUBLISHED = {"objective": 1.018274e-3, "E": 1.8172, "A": 477.8, "B": 2143.4, "alpha": 0.3473, "beta": 0.3672}
TARGET_ENGINE_S = 0.5
TARGET_SPEEDUP = 200.0
TARGET_BOOTSTRAP_S = 15.0
TARGET_GAP = 1e-9


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load():
    with open(DATA, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {c: np.array([float(r[c]) for r in rows]) for c in ("params", "tokens", "flops", "loss")}


def split(data):
    """Train on the 80% lowest-compute runs, hold out the rest (by the flops column)."""
    order = np.argsort(data["flops"], kind="stable")
    n_train = int(round(len(order) * (1.0 - HELD_OUT_FRACTION)))
    pick = lambda idx: tuple(data[c][idx] for c in ("params", "tokens", "loss"))  # noqa: E731
    return pick(order[:n_train]), pick(order[n_train:])


def limit_blas(threads: int) -> str:
    if threads <= 0:
        return "library default"
    try:
        import scipy.optimize  # noqa: F401  (load scipy's own BLAS first so that the limit reaches it)
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "library default (threadpoolctl not installed)"
    threadpool_limits(limits=threads)
    return f"{threads} (threadpoolctl)"


def held_out_errors(law: ChinchillaLaw, test):
    N, D, L = test
    pred = law.loss(N, D)
    mare = float(np.mean(np.abs(pred / L - 1.0)))
    rmse_log = float(np.sqrt(np.mean((np.log(pred) - np.log(L)) ** 2)))
    return mare, rmse_log


def law_of(theta) -> ChinchillaLaw:
    a, b, e, alpha, beta = (float(x) for x in theta)
    return ChinchillaLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)


# -- the methods --------------------------------------------------------------------------------------------------
def run_engine(train_all, test_split, repeats):
    N, D, L = train_all
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fit = ChinchillaFit().fit(N, D, L)
        times.append(time.perf_counter() - t)
    held = ChinchillaFit().fit(*test_split[0])
    return {
        "seconds": statistics.median(times),
        "times": times,
        "theta": fit.theta_,
        "objective": fit.objective_,
        "held_out": held_out_errors(held.law_, test_split[1]),
        "fit": fit,
    }


def run_bootstrap(fit, repeats):
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = bootstrap(fit, n_resamples=1000, seed=0)
        times.append(time.perf_counter() - t)
    return {"seconds": statistics.median(times), "times": times, "n_failed": result.n_failed, "result": result}


def run_loop(train_all, test_split):
    t = time.perf_counter()
    theta, value = hoffmann_grid_fit(*train_all)
    seconds = time.perf_counter() - t
    log(f"  loop: {seconds:.1f} s; held-out fit ...")
    held_theta, _ = hoffmann_grid_fit(*test_split[0])
    return {
        "seconds": seconds,
        "theta": np.asarray(theta),
        "objective": value,
        "held_out": held_out_errors(law_of(held_theta), test_split[1]),
    }


def chinchilla_grid():
    g = HOFFMANN_GRID
    # order matters: the package unpacks (E, A, B, alpha, beta) from the values in this order
    return {"e": g["e"], "a": g["a"], "b": g["b"], "alpha": g["alpha"], "beta": g["beta"]}


def chinchilla_fit(N, D, L):
    """Fit with the `chinchilla` package's defaults and the 4500-start grid; (params dict, seconds of fit())."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # it saves a figure of the fit into the project folder
    from chinchilla import Chinchilla

    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "df.csv"), "w") as fh:
            fh.write("C,N,D,loss\n")
            for n, d, loss in zip(N, D, L):
                fh.write(f"{float(6.0 * n * d)!r},{float(n)!r},{float(d)!r},{float(loss)!r}\n")
        cc = Chinchilla(folder, param_grid=chinchilla_grid(), log_level=40)
        t = time.perf_counter()
        cc.fit()
        seconds = time.perf_counter() - t
        params = cc.get_params()
    import matplotlib.pyplot as plt

    plt.close("all")
    return params, seconds


def run_chinchilla(train_all, test_split):
    # Importing the package installs global warning filters (every UserWarning ignored) and replaces the root
    # logging handler; keep its warning filters inside this block.
    with warnings.catch_warnings():
        try:
            import chinchilla  # noqa: F401
        except ImportError as err:
            return {"error": f"not installed ({err})"}
        try:
            params, seconds = chinchilla_fit(*train_all)
            log(f"  chinchilla: {seconds:.1f} s; held-out fit ...")
            held, _ = chinchilla_fit(*test_split[0])
        except Exception as err:  # report, do not hide: the table says why
            return {"error": f"failed: {type(err).__name__}: {err}"}
    theta = np.array([math.log(params[k]) for k in ("A", "B", "E")] + [params["alpha"], params["beta"]])
    N, D, L = train_all
    return {
        "seconds": seconds,
        "theta": theta,
        "objective": huber_objective(theta, N, D, L)[0],
        "held_out": held_out_errors(
            ChinchillaLaw(E=held["E"], A=held["A"], B=held["B"], alpha=held["alpha"], beta=held["beta"]), test_split[1]
        ),
    }


# -- report -------------------------------------------------------------------------------------------------------
def row(name, r, reference):
    if r is None or "error" in r:
        why = "skipped (--quick)" if r is None else r["error"]
        return f"| {name} | {why} | | | | | | | | | |"
    law = law_of(r["theta"])
    gap = (r["objective"] - reference) / reference
    mare, rmse = r["held_out"]
    return (
        f"| {name} | {r['seconds']:.3g} | {r['objective']:.9e} | {gap:+.2e} | {law.E:.4f} | {law.A:.1f} | "
        f"{law.B:.1f} | {law.alpha:.4f} | {law.beta:.4f} | {100 * mare:.2f}% | {rmse:.4f} |"
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISSED"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the 4500-start loop and the chinchilla package")
    parser.add_argument("--repeats", type=int, default=7, help="engine fits timed (median reported)")
    parser.add_argument("--blas-threads", type=int, default=1, help="BLAS threads (0: library default)")
    args = parser.parse_args(argv)

    if not DATA.exists():
        print("SKIPPED: ../shared/data not found (reference data is not part of the repository)")
        return 0
    blas = limit_blas(args.blas_threads)
    data = load()
    full = (data["params"], data["tokens"], data["loss"])
    parts = split(data)
    n = len(data["loss"])

    log("engine ...")
    engine = run_engine(full, parts, args.repeats)
    log("bootstrap ...")
    boot = run_bootstrap(engine["fit"], 3)
    loop = pkg = None
    if not args.quick:
        log("loop (4500 starts, about 1 to 4 minutes per fit; two fits) ...")
        loop = run_loop(full, parts)
        log("chinchilla package (4500 starts; two fits) ...")
        pkg = run_chinchilla(full, parts)

    if loop is not None:
        reference, ref_name = loop["objective"], "the loop's best objective, this run"
    else:
        reference, ref_name = PUBLISHED["objective"], "the published grid optimum 1.018274e-3, 7 digits (loop not run)"

    try:
        cc_version = version("chinchilla")
    except PackageNotFoundError:
        cc_version = "not installed"
    print(
        f"machine: python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"chinchilla {cc_version}, cpu count {os.cpu_count()}, BLAS threads {blas}"
    )
    print(f"data: chinchilla_epoch.csv, {n} runs; held out: the {len(parts[1][2])} highest-compute runs (20% by flops)")
    if args.quick:
        print("--quick: the 4500-start loop and the chinchilla package were skipped")
    print()
    print(
        "| method | wall time (s) | objective | relative gap to grid best | E | A | B | alpha | beta "
        "| held-out MARE | held-out RMSE log L |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(row(f"engine: `ChinchillaFit().fit` (median of {args.repeats})", engine, reference))
    print(row("loop: `hoffmann_grid_fit` (4500 L-BFGS-B starts, once)", loop, reference))
    print(row("`chinchilla` 0.2.0 `fit()` (defaults, 4500-start grid, once)", pkg, reference))
    print(f"| bootstrap: 1000 resamples of the engine fit (median of 3) | {boot['seconds']:.3g} | | | | | | | | | |")
    p = PUBLISHED
    print(
        f"| published plain Huber fit (Besiroglu et al. 2024) | | {p['objective']:.6e} | "
        f"{(p['objective'] - reference) / reference:+.2e} | {p['E']} | {p['A']} | {p['B']} | {p['alpha']} | "
        f"{p['beta']} | | |"
    )
    print()
    print(f"relative gap: (objective - reference) / reference, reference = {ref_name}")
    t = engine["times"]
    print(f"engine fit times (s): min {min(t):.3g}, median {statistics.median(t):.3g}, max {max(t):.3g}")
    times = ", ".join(f"{x:.3g}" for x in boot["times"])
    print(f"bootstrap times (s): {times}; failed replicates: {boot['n_failed']}")
    print()
    t_engine = engine["seconds"]
    print(f"target engine <= {TARGET_ENGINE_S} s: {t_engine:.3g} s -> {verdict(t_engine <= TARGET_ENGINE_S)}")
    if loop is not None:
        speedup = loop["seconds"] / t_engine
        ok = verdict(speedup >= TARGET_SPEEDUP)
        print(f"target speedup engine vs loop >= {TARGET_SPEEDUP:.0f}x: {speedup:.0f}x -> {ok}")
        gap = (engine["objective"] - loop["objective"]) / loop["objective"]
        ok = verdict(gap <= TARGET_GAP)
        print(f"target engine objective within {TARGET_GAP:g} of the loop's best: {gap:+.2e} -> {ok}")
    else:
        print(f"target speedup engine vs loop >= {TARGET_SPEEDUP:.0f}x: not measured (--quick)")
    print(
        f"target bootstrap (1000 resamples) <= {TARGET_BOOTSTRAP_S:.0f} s: {boot['seconds']:.3g} s -> "
        f"{verdict(boot['seconds'] <= TARGET_BOOTSTRAP_S)}"
    )
    if pkg is not None and "error" not in pkg:
        print(
            f"chinchilla package vs engine: {pkg['seconds'] / engine['seconds']:.0f}x the time; its objective is "
            f"{(pkg['objective'] - engine['objective']) / engine['objective']:+.1%} relative to the engine's (it "
            "minimises its own default loss, asymmetric MAE, not this objective)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
