"""What keeps the closing hook fast on a large store, each pinned on its own (the timing is in
`benchmarks/store_scale.py`): the run's lowest loss from its tag instead of its history, the re-check that reads only
the runs that ended since, the bounded scan, the bootstrap's pilot and batches, fits shared within one plan, and
figures that stay small."""

from __future__ import annotations

import json
import time
import warnings
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from conftest import grid_runs
from test_callbacks import B, T, make_data, make_model, make_trainer

from lightning_scaling import ChinchillaFit
from lightning_scaling.callbacks import ScalingTracker
from lightning_scaling.integrations.mlflow_store import MLflowRunStore
from lightning_scaling.law import bootstrap as boot
from lightning_scaling.law import search
from lightning_scaling.law.allocation import optimal_allocation
from lightning_scaling.law.form import fit_runs, shared_fits
from lightning_scaling.law.synthetic import CHINCHILLA_PAPER_LAW as LAW
from lightning_scaling.planner.next_run import plan_next_run
from lightning_scaling.planner.recommendation import FIGURE_GROUPS, figure_data
from lightning_scaling.runs import schema
from lightning_scaling.runs.records import RunRecord, Selection, select_runs


def random_budget_runs(n: int, seed: int = 0, noise: float = 0.005):
    """n runs at n different budgets around the compute-optimal size (no two share an isoFLOP group)."""
    rng = np.random.default_rng(seed)
    C = 10 ** rng.uniform(17, 21, n)
    N_opt, _, _ = optimal_allocation(LAW.E, LAW.A, LAW.B, LAW.alpha, LAW.beta, C)
    N = N_opt * 4 ** rng.uniform(-1, 1, n)
    D = C / (6 * N)
    return N, D, LAW.loss(N, D) * np.exp(rng.normal(0, noise, n))


# -- the lowest loss from the tracker's tag ---------------------------------------------------------------------------
def test_tracker_tags_the_lowest_validation_loss(tmp_path):
    from lightning.pytorch.loggers import MLFlowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(experiment_name="best", tracking_uri=uri, artifact_location=str(tmp_path / "art"))
    trainer = make_trainer([ScalingTracker(log_every_n_steps=3)], max_steps=12, logger=logger, log_every_n_steps=3,
                           val_check_interval=3, limit_val_batches=2)
    trainer.fit(make_model(), make_data())
    client = mlflow.MlflowClient(uri)
    history = [m.value for m in client.get_metric_history(logger.run_id, "val_loss")]
    best = json.loads(client.get_run(logger.run_id).data.tags[schema.BEST_TAG])
    assert len(history) == 4 and best["val_loss"] == pytest.approx(min(history), rel=1e-6)
    assert client.get_run(logger.run_id).data.metrics[schema.TOKENS] == 12 * B * T


class CountingClient:
    def __init__(self, history):
        self.history, self.calls = history, 0

    def get_metric_history(self, run_id, key):
        self.calls += 1
        return [SimpleNamespace(value=v, step=i, timestamp=i) for i, v in enumerate(self.history)]


def fake_run(loss: float, best_tag: str | None):
    tags = {schema.SCHEMA_TAG: "1"} | ({schema.BEST_TAG: best_tag} if best_tag is not None else {})
    metrics = {schema.TOKENS: 1e9, schema.FLOPS: 7e15, schema.PARAMS_AVG: 1e6, "val_loss": loss}
    info = SimpleNamespace(run_id="r", run_name="r", status="FINISHED", start_time=0)
    return SimpleNamespace(info=info, data=SimpleNamespace(metrics=metrics, params={}, tags=tags))


@pytest.mark.parametrize("tag, reads, best", [
    ('{"val_loss": 1.0}', 0, 1.0),  # the tag: no history read, and a final 2.0 over a best 1.0 is divergence
    (None, 1, 1.5),  # no tag (an older tracker): the history says
    ('{"val_loss": "x"}', 1, 1.5),  # a tag that does not hold a number: the history says
    ('{bad', 1, 1.5),
])
def test_the_store_takes_the_best_loss_from_the_tag(tag, reads, best):
    store = object.__new__(MLflowRunStore)
    store.client, store.loss_key, store.stale_after = CountingClient([3.0, 1.5, 2.0]), "val_loss", 1800.0
    record = store.record(fake_run(2.0, tag))
    assert (record.best_loss, store.client.calls) == (best, reads)
    diverged = select_runs([record]).excluded
    assert bool(diverged) == (best == 1.0)
    if diverged:
        assert diverged[0][1].startswith("diverged: final val_loss 2 is more than 1.5x its best 1")


def test_the_recheck_reads_only_runs_that_ended_since(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("recheck")

    def finished_run(name, end_ms):
        run = client.create_run(exp, run_name=name, tags={schema.SCHEMA_TAG: "1"})
        for key, value in ((schema.TOKENS, 1e9), (schema.FLOPS, 7e15), (schema.PARAMS_AVG, 1e6), ("val_loss", 3.0)):
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, "FINISHED", end_time=end_ms)
        return run.info.run_id

    hour_ago = int(time.time() * 1000) - 3_600_000
    finished_run("old", hour_ago)
    store = MLflowRunStore(uri, experiment_name="recheck")
    read_at = time.time() * 1000
    selection = store.select()
    assert not store.more_usable_since(selection, read_at)
    new = finished_run("new", int(time.time() * 1000))
    assert store.more_usable_since(selection, read_at)
    assert new in {r.run_id for r in store.select().used}
    # a run that ended long before the read is in the selection already: it does not count as new
    assert not store.more_usable_since(store.select(), read_at)


# -- the fit's cost ----------------------------------------------------------------------------------------------------
def test_the_bounded_scan_finds_the_optimum_of_the_full_scan(monkeypatch):
    N, D, L = random_budget_runs(3 * search.SCAN_RUNS)
    bounded = ChinchillaFit().fit(N, D, L)
    monkeypatch.setattr(search, "SCAN_RUNS", 10**9)
    import lightning_scaling.law.fit as fit_module

    monkeypatch.setattr(fit_module, "SCAN_RUNS", 10**9)
    full = ChinchillaFit().fit(N, D, L)
    assert bounded.objective_ == pytest.approx(full.objective_, rel=1e-9)
    assert bounded.alpha_ == pytest.approx(full.alpha_, rel=1e-6)
    assert bounded.beta_ == pytest.approx(full.beta_, rel=1e-6)


def test_the_scan_subset_spreads_over_compute():
    idx = search.scan_subset(np.log(np.geomspace(1, 1e6, 1000)), 10)
    assert len(idx) == 10 and idx[0] == 0 and idx[-1] == 999
    assert np.all(np.diff(idx) >= 100)  # evenly spaced, not the first ten


@pytest.mark.parametrize("chunk", [2**10, 2**30])
def test_bootstrap_batches_and_pilot_leave_the_replicates_unchanged(monkeypatch, chunk):
    N, D, L = grid_runs(noise=0.02, seed=3)
    fit = ChinchillaFit().fit(N, D, L)
    reference = boot.bootstrap(fit, n_resamples=300, seed=1)
    monkeypatch.setattr(boot, "CHUNK", chunk)
    monkeypatch.setattr(boot, "PILOT", 300)  # every replicate tries every basin
    every_start = boot.bootstrap(fit, n_resamples=300, seed=1)
    for name in ("E", "A", "B", "alpha", "beta"):
        np.testing.assert_allclose(reference.samples[name], every_start.samples[name], rtol=1e-6)


def test_the_pilot_sends_every_replicate_to_every_basin_when_one_needs_it():
    """Two starts, the second the better one for some replicates: the pilot sees it, so the rest try both."""
    N, D, L = grid_runs(noise=0.02, seed=3)
    fit = ChinchillaFit().fit(N, D, L)
    cN, cD = np.log(fit.N_) - fit.centre_[0], np.log(fit.D_) - fit.centre_[1]
    far = fit.basins_[0] + np.array([3.0, -3.0, 0.5, 0.4, -0.2])  # a poor start: better from the optimum
    rng = np.random.default_rng(0)
    counts = rng.multinomial(len(N), np.full(len(N), 1 / len(N)), size=250).astype(float)
    both = boot._replicate_optima(np.stack([far, fit.basins_[0]]), counts, cN, cD, np.log(fit.loss_), fit.delta,
                                  fit.exponent_max)
    best_only = boot._optimise(fit.basins_[:1], counts, cN, cD, np.log(fit.loss_), fit.delta, fit.exponent_max)[0][:, 0]
    far_only = boot._optimise(far[None], counts, cN, cD, np.log(fit.loss_), fit.delta, fit.exponent_max)[0][:, 0]
    assert not np.allclose(far_only, best_only, rtol=1e-3)  # from the poor start alone some replicates end elsewhere
    # the first start is the poor one, so the pilot finds the second better and every replicate tries both: none
    # ends worse than from the good start alone, and nearly all at the same optimum (where a replicate's optimum
    # lies in a flat valley, two Newton runs stop at different points of it with the same objective: seen once,
    # 1 of 250 replicates, objectives equal to 5 digits, coordinates 3e-2 apart)
    from lightning_scaling.law.objective import objective

    logL = np.log(fit.loss_)
    f_both = np.array([objective(t[None], cN, cD, logL, w=c, delta=fit.delta)[0] for t, c in zip(both, counts)])
    f_best = np.array([objective(t[None], cN, cD, logL, w=c, delta=fit.delta)[0] for t, c in zip(best_only, counts)])
    assert np.all(f_both <= f_best * (1 + 1e-9))
    same = np.all(np.isclose(both, best_only, rtol=1e-6, atol=1e-7), axis=1)
    assert same.mean() >= 0.98, np.flatnonzero(~same)


def test_fits_are_shared_within_a_plan_and_only_for_the_same_runs():
    N, D, L = grid_runs(noise=0.01, seed=0)
    idx = np.arange(len(N) - 5)
    assert fit_runs(ChinchillaFit, N, D, L, idx) is not fit_runs(ChinchillaFit, N, D, L, idx)
    with shared_fits():
        first = fit_runs(ChinchillaFit, N, D, L, idx)
        assert fit_runs(ChinchillaFit, N, D, L, idx.copy()) is first
        assert fit_runs(ChinchillaFit, N, D, L * 1.01, idx) is not first  # other losses: another fit
        assert fit_runs(ChinchillaFit, N, D, L, idx[:-1]) is not first


def test_a_plan_is_the_same_with_shared_fits(monkeypatch):
    import contextlib

    import lightning_scaling.planner.next_run as plan_module

    N, D, L = grid_runs(noise=0.01, seed=2)
    used = [RunRecord(run_id=f"r{i}", schema="1", params=n, tokens=d, flops=6.5 * n * d, loss=l)
            for i, (n, d, l) in enumerate(zip(N, D, L))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shared = plan_next_run(Selection(used, []), n_bootstrap=50)
        monkeypatch.setattr(plan_module, "shared_fits", contextlib.nullcontext)
        unshared = plan_next_run(Selection(used, []), n_bootstrap=50)
    for key in ("params", "tokens", "loss", "loss_low", "loss_high"):
        assert shared[key] == pytest.approx(unshared[key], rel=1e-9), key
    assert shared["backtest"]["mape"] == pytest.approx(unshared["backtest"]["mape"], rel=1e-9)


def test_figures_of_a_large_store_bin_the_budgets():
    N, D, L = random_budget_runs(200)
    fit = ChinchillaFit().fit(N, D, L)
    groups = figure_data(fit, 6 * N * D, 1e22)["isoflop"]
    assert len(groups) == FIGURE_GROUPS
    members = sorted(i for g in groups for i in g["members"])
    assert members == list(range(200))  # every run drawn once
    flops = [g["flops"] for g in groups]
    assert flops == sorted(flops)
