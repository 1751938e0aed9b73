"""Acceptance: `ChinchillaFit` reaches the best objective of the 4500-start reference grid.

The reference is `hoffmann_grid_fit`: scipy L-BFGS-B from every start of the grid of Hoffmann et al. 2022 (as in
Besiroglu et al. 2024), best kept. The fitter must reach that best objective within 1e-9 relative on every data set
in ../shared/data/ and on two seeded synthetic data sets.

Running the grid. A start is a 5-parameter L-BFGS-B run of 70 to 200 evaluations, so the grid is some 500,000
evaluations per data set; with `hoffmann_grid_fit`'s own tolerances (ftol=1e-15, gtol=1e-12) the eight data sets
below take about 20 CPU-minutes on a shared 2-core machine. To stay within about 5 minutes, the slow tests run the
grid in two stages, in a process pool of two workers, from one module-scoped fixture:

1. every start of the grid, split into chunks of 500, with scipy's default L-BFGS-B tolerances
   (ftol=2.2e-9, gtol=1e-5): about half the evaluations; each chunk keeps its best end point;
2. the best end points of the chunks polished by `hoffmann_grid_fit` with ftol=0 and gtol=1e-12, keeping the best.

Why ftol=0 in stage 2: scipy stops L-BFGS-B when (f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol, and the objective
is about 1e-3, so ftol acts on the absolute decrease; restarted near the optimum (no curvature memory), it stops
after a few tiny steps, up to 3e-10 relative above the optimum (measured on gadre2024_c4_original), even with
ftol=1e-15. With ftol=0 it stops on the gradient or when no step decreases f.

Measured on all eight data sets, the two-stage best equals the best of the full grid run at `hoffmann_grid_fit`'s
own tolerances (ftol=1e-15, gtol=1e-12) to within 1.2e-14 relative. This file took 221 s and 321 s in two runs on a
shared 2-core machine (1-minute load average about 5), against 609 s for the full grid at tight tolerances.

Each worker limits BLAS to one thread when threadpoolctl is installed: L-BFGS-B's tiny BLAS calls are otherwise up
to 100x slower on a loaded 2-core machine (threads contending).
"""

from __future__ import annotations

import csv
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import pytest
from conftest import SHARED_DATA, SHARED_REASON

from benchmarks.hoffmann_grid import hoffmann_grid_fit, hoffmann_grid_starts
from lightning_scaling import ChinchillaFit, ChinchillaLaw
from lightning_scaling.law.objective import huber_objective

RTOL = 1e-9  # the acceptance tolerance on the objective, relative
CHUNK = 500  # grid starts per task of the process pool
STAGE1 = {"ftol": 2.220446049250313e-09, "gtol": 1e-05}  # scipy's L-BFGS-B defaults
STAGE2 = {"ftol": 0.0, "gtol": 1e-12}  # polish: stop on the gradient or when no step decreases f (see above)


# -- data sets ----------------------------------------------------------------------------------------------------
def _columns(name, *columns):
    with open(SHARED_DATA / name, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [np.array([float(r[c]) for r in rows]) for c in columns]


def _epoch():
    return _columns("chinchilla_epoch.csv", "params", "tokens", "loss")


def _epoch_raw():
    N, C, L = _columns("chinchilla_epoch_raw.csv", "Model Size", "Training FLOP", "loss")
    return N, C / (6.0 * N), L


def _gadre(dataset, loss_column):
    def load():
        with open(SHARED_DATA / "gadre2024_open_lm.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["dataset"] == dataset]
        return [np.array([float(r[c]) for r in rows]) for c in ("params", "train_tokens", loss_column)]

    return load


def _datablations():
    return _columns("datablations_c4.csv", "params", "tokens", "val_loss")


def _synthetic(law, seed):
    def make():
        N, D = np.meshgrid([1e7, 3e7, 1e8, 3e8], [2e8, 6e8, 2e9, 6e9, 2e10], indexing="ij")
        N, D = N.ravel(), D.ravel()
        L = law.loss(N, D) * np.exp(np.random.default_rng(seed).normal(0.0, 0.01, N.size))
        return N, D, L

    return make


SYNTHETIC_LAWS = {
    "synthetic_chinchilla": (ChinchillaLaw(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.37), 1),
    "synthetic_steep_N": (ChinchillaLaw(E=2.0, A=1000.0, B=100.0, alpha=0.5, beta=0.25), 2),
}

REAL = {
    "chinchilla_epoch": _epoch,
    "chinchilla_epoch_raw": _epoch_raw,
    "gadre2024_c4_original": _gadre("c4_original", "loss_c4_val"),
    "gadre2024_rpj": _gadre("rpj", "loss_paloma_redpajama"),
    "gadre2024_rw_original": _gadre("rw_original", "loss_paloma_falcon-refinedweb"),
    "datablations_c4": _datablations,
}
SYNTHETIC = {name: _synthetic(law, seed) for name, (law, seed) in SYNTHETIC_LAWS.items()}
LOADERS = {**REAL, **SYNTHETIC}
FILES = ("chinchilla_epoch.csv", "chinchilla_epoch_raw.csv", "gadre2024_open_lm.csv", "datablations_c4.csv")
HAVE_DATA = all((SHARED_DATA / f).is_file() for f in FILES)


def _cases():
    real = [pytest.param(n, marks=pytest.mark.skipif(not HAVE_DATA, reason=SHARED_REASON), id=n) for n in REAL]
    return real + [pytest.param(n, id=n) for n in SYNTHETIC]


# -- the reference grid, in worker processes ----------------------------------------------------------------------
def _one_blas_thread():
    try:
        import scipy.optimize  # noqa: F401  (load scipy's BLAS first, so that the limit applies to it)
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the grid is only slower
        return
    threadpool_limits(limits=1)


def _grid_task(N, D, L, starts, stage):
    """Worker: `hoffmann_grid_fit` over some starts, with the tolerances of stage 1 or stage 2."""
    _one_blas_thread()
    return hoffmann_grid_fit(N, D, L, starts=starts, **(STAGE1 if stage == 1 else STAGE2))


def _selected(request):
    """The data sets whose grid test is selected in this session (all of them when that cannot be told)."""
    names = {
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_fit_reaches_grid_best" and hasattr(item, "callspec")
    }
    names = [n for n in LOADERS if n in names] or list(LOADERS)
    return [n for n in names if n in SYNTHETIC or HAVE_DATA]


def grid_bests(names):
    """name -> (theta, objective, seconds since the start): the best of the 4500-start grid for each data set."""
    data = {n: LOADERS[n]() for n in names}
    starts = hoffmann_grid_starts()
    chunks = [starts[i : i + CHUNK] for i in range(0, len(starts), CHUNK)]
    t0 = time.perf_counter()
    out = {}
    with ProcessPoolExecutor(max_workers=2) as pool:
        stage1 = {pool.submit(_grid_task, *data[n], chunk, 1): n for n in names for chunk in chunks}
        ends = {n: [] for n in names}
        left = {n: len(chunks) for n in names}
        stage2 = {}
        for future in as_completed(stage1):
            n = stage1[future]
            theta, _ = future.result()
            if theta is not None:
                ends[n].append(theta)
            left[n] -= 1
            if left[n] == 0:  # polish this data set's chunk bests while other chunks still run
                if ends[n]:
                    stage2[pool.submit(_grid_task, *data[n], np.array(ends[n]), 2)] = n
                else:
                    out[n] = (None, np.inf, time.perf_counter() - t0)
        for future in as_completed(stage2):
            theta, value = future.result()
            out[stage2[future]] = (theta, value, time.perf_counter() - t0)
    return out


@pytest.fixture(scope="module")
def grid_best(request):
    """The grid's best for every data set whose grid test is selected, computed once for the module."""
    return grid_bests(_selected(request))


# -- tests --------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", _cases())
def test_fit_reaches_grid_best(name, grid_best):
    N, D, L = LOADERS[name]()
    fit = ChinchillaFit().fit(N, D, L)
    theta, best, _ = grid_best[name]
    assert theta is not None, f"{name}: no start of the grid gave a finite objective"
    assert fit.objective_ <= best * (1.0 + RTOL), (
        f"{name}: fitter objective {fit.objective_:.15g} is above the 4500-start grid's best {best:.15g} "
        f"(relative gap {(fit.objective_ - best) / best:.3g}); grid optimum theta = {np.round(theta, 6).tolist()}"
    )


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_synthetic_fit_beats_local_polish_from_truth(name):
    """Fast check, no grid: the fit is at least as good as L-BFGS-B started at the true law, and close to the law."""
    law, _ = SYNTHETIC_LAWS[name]
    N, D, L = SYNTHETIC[name]()
    fit = ChinchillaFit().fit(N, D, L)
    truth = np.log([law.A, law.B, law.E]).tolist() + [law.alpha, law.beta]
    _, local = hoffmann_grid_fit(N, D, L, starts=[truth])
    assert fit.objective_ <= local * (1.0 + RTOL)
    assert fit.objective_ <= huber_objective(truth, N, D, L)[0]
    assert fit.boundary_ == []
    # 20 runs with 1% noise pin the loss surface, not each exponent: compare predictions with the noiseless law.
    assert np.abs(fit.predict(N, D) / law.loss(N, D) - 1.0).max() < 0.01
