"""Checkpoints as points of the law in (N, D): the schedule correction, the run bootstrap, and the closing hook's
choice between final losses and whole curves."""

from dataclasses import replace

import numpy as np
import pytest

from lightning_scaling.curves import correction as checkpoints
from lightning_scaling.curves.annealing import AnnealingLaw, schedule_areas
from lightning_scaling.curves.correction import model_key, plan_rule, schedule_corrected
from lightning_scaling.curves.shared_fit import Curve
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.evaluation.backtest import backtest
from lightning_scaling.evaluation.folds import inside_hull
from lightning_scaling.law.bootstrap import resample_counts
from lightning_scaling.law.fit import ChinchillaFit
from lightning_scaling.planner import recommendation_markdown
from lightning_scaling.planner.next_run import plan_next_run
from lightning_scaling.runs.records import RunRecord, Selection
from lightning_scaling.schedules.lr import PowerSchedule

TOKENS_PER_STEP = 4096
MOMENTUM = 0.99


def schedule(T, kind):
    s = np.arange(1, T + 1)
    if kind == "power":
        p = PowerSchedule(batch_size=8, warmup_tokens=50 * TOKENS_PER_STEP, total_tokens=T * TOKENS_PER_STEP)
        return np.array([p.lr(i * TOKENS_PER_STEP) for i in s])
    if kind == "cosine":
        return np.where(s < 50, s / 50, 0.5 * (1 + np.cos(np.pi * (s - 50) / (T - 50)))) * 1e-3
    if kind == "wsd":
        lr = np.where(s < 50, s / 50, 1.0)
        decay = int(0.2 * T)
        return np.where(s > T - decay, (T - s) / decay, lr) * 1e-3
    return np.where(s < 50, s / 50, 1.0) * 1e-3  # constant after warmup


def family(kind, sizes_steps, noise=0.0, seed=0, every=25, validations=8):
    """Runs whose every point follows the annealing law, with per-size L0: (curves, ids, N, D, laws)."""
    rng = np.random.default_rng(seed)
    curves, ids, N, D, laws = [], [], [], [], {}
    longest = schedule(3000, kind)
    S1, S2 = schedule_areas(np.arange(1, 3001), longest, MOMENTUM)
    A, C = float(S1[-1]) ** 0.4, 0.15 / float(S2[-1]) if S2[-1] > 0 else 0.0
    for j, (n, T) in enumerate(sizes_steps):
        law = AnnealingLaw(L0=2.0 + 60.0 / n**0.3, A=A, C=C, alpha=0.4, momentum=MOMENTUM)
        lr = schedule(T, kind)
        S1, S2 = schedule_areas(np.arange(1, T + 1), lr, MOMENTUM)
        loss = law.loss(S1, S2) * np.exp(rng.normal(0.0, noise, T))
        val = np.arange(T // validations, T + 1, T // validations)
        val[-1] = T
        steps = np.union1d(np.arange(every, T + 1, every), val)
        observed = np.where(np.isin(steps, val), loss[steps - 1], np.nan)
        curves.append(Curve(f"r{j}", steps, lr[steps - 1], observed))
        ids.append(f"r{j}")
        N.append(n)
        D.append(T * TOKENS_PER_STEP)
        laws[j] = law
    return curves, ids, np.array(N, float), np.array(D, float), laws


def short_run_final(law, k, kind):
    S1, S2 = schedule_areas(np.arange(1, k + 1), schedule(k, kind), MOMENTUM)
    return float(law.loss(S1[-1], S2[-1]))


@pytest.mark.parametrize("kind, fraction, tolerance", [("power", 0.1, 1e-4), ("power", None, 5e-3),
                                                       ("cosine", None, 1e-4), ("wsd", None, 1e-4)])
def test_a_checkpoint_corrected_for_the_schedule_is_the_final_loss_of_the_shorter_run(kind, fraction, tolerance):
    runs = [(1e6, 2000), (2e6, 1600), (4e6, 1200), (1e6, 800), (2e6, 3000)]
    curves, ids, N, D, laws = family(kind, runs, every=5)  # the learning rate logged every 5 steps
    fractions = {i: fraction for i in ids} if fraction is not None else None
    points = schedule_corrected(curves, ids, N, D, fractions)
    assert len(points) == 5 * 6  # the checkpoints from a quarter of each run on, the final one left out
    corrected, raw = [], []
    for run, d, loss, measured in zip(points.run, points.D, points.loss, points.measured):
        truth = short_run_final(laws[run], int(round(d / TOKENS_PER_STEP)), kind)
        corrected.append(loss / truth - 1.0)
        raw.append(measured / truth - 1.0)
    assert np.max(np.abs(corrected)) < tolerance
    assert np.mean(np.abs(raw)) > 5 * np.mean(np.abs(corrected))  # uncorrected, a checkpoint is no final loss


def test_how_each_schedule_is_planned_for_fewer_steps():
    steps = np.arange(25, 2001, 25)
    assert plan_rule(steps, schedule(2000, "cosine")[steps - 1])[0] == "stretch"
    assert plan_rule(steps, schedule(2000, "power")[steps - 1])[0] == "decay"
    kind, start = plan_rule(steps, schedule(2000, "wsd")[steps - 1])
    assert kind == "decay" and start == pytest.approx(0.8 * 2000, abs=25)
    assert plan_rule(steps, schedule(2000, "power")[steps - 1], decay_fraction=0.1) == ("decay", 1800.0)


def test_a_constant_schedule_needs_no_correction():
    curves, ids, N, D, _ = family("constant", [(1e6, 1000), (2e6, 1200)])
    points = schedule_corrected(curves, ids, N, D)
    assert len(points) and np.allclose(points.loss, points.measured, rtol=1e-12)


def test_the_bootstrap_draws_whole_runs():
    groups = np.array([0, 1, 2, 0, 0, 1, 2, 2])
    counts = resample_counts(np.random.default_rng(0), len(groups), 400, groups)
    for g in range(3):  # every point of a run is drawn as often as its run
        assert np.all(counts[:, groups == g] == counts[:, [np.nonzero(groups == g)[0][0]]])
    assert np.all(counts[:, [0, 1, 2]].sum(axis=1) == 3)  # three runs drawn per replicate


def _records(N, D, curves):
    return [RunRecord(run_id=c.run, run_name=c.run, schema="1", params=float(n), params_dense=float(n),
                      tokens=float(d), flops=6.0 * n * d, loss=float(c.loss[np.isfinite(c.loss)][-1]),
                      config={"scaling/power_decay_fraction": "0.2"})
            for c, n, d in zip(curves, N, D)]


GRID = [(n, T) for n in (4e5, 1e6, 2.5e6, 6e6, 1.5e7) for T in (300, 600, 1200, 2400)]


def test_corrected_checkpoints_predict_held_out_runs_and_uncorrected_ones_do_not():
    curves, ids, N, D, _ = family("wsd", GRID, noise=0.003, seed=0, every=10)
    L = np.array([c.loss[np.isfinite(c.loss)][-1] for c in curves])
    points = schedule_corrected(curves, ids, N, D, {i: 0.2 for i in ids})
    corrected = backtest(ChinchillaFit, N, D, L, checkpoints=points)
    uncorrected = backtest(ChinchillaFit, N, D, L, checkpoints=replace(points, loss=points.measured))
    assert corrected["data"] == "final losses and schedule-corrected checkpoints"
    assert corrected["held_out"] == backtest(ChinchillaFit, N, D, L)["held_out"] > 0
    assert corrected["mape"] < 0.6 < 1.2 < uncorrected["mape"]  # stable-phase checkpoints read as finals: too high


def test_the_closing_hook_fits_on_the_checkpoints_when_they_predict_better_and_says_so():
    curves, ids, N, D, _ = family("wsd", GRID, noise=0.01, seed=1, every=10)
    selection = Selection(used=_records(N, D, curves), excluded=[])
    rec = plan_next_run(selection, n_bootstrap=200, curves=curves, use_curves="auto")
    data = rec["data"]
    assert rec["status"] == "ok"
    assert data["used"] == "final losses and schedule-corrected checkpoints"
    # the grid's final losses span a rectangle in (log N, log D): checkpoints count from a quarter of their run and
    # from the shortest run's 300 steps on (the 300-step runs have none; 600: 300..525; 1200, 2400: 6 each)
    assert data["checkpoint_points"] == 5 * (0 + 4 + 6 + 6)
    assert data["checkpoints"]["outside_final_losses"] == 5 * (5 + 2)
    assert rec["n_runs"] == 20 and len(rec["runs"]["used"]) == 20  # the runs are counted once
    mape = data["backtest_mape"]
    assert mape["whole_curve"] < mape["final_only"]
    assert rec["backtest_curves"]["mape"] == mape["whole_curve"]
    iv = data["params_interval"]
    assert iv["whole_curve"][0] <= rec["params"] <= iv["whole_curve"][1]
    assert iv["whole_curve_ratio"] < iv["final_only_ratio"]
    assert "100 checkpoints" not in data["sentence"] and "(20 runs, 80 checkpoints)" in data["sentence"]
    assert "Data: fitted on final losses and schedule-corrected checkpoints" in recommendation_markdown(rec)
    never = plan_next_run(selection, n_bootstrap=0, curves=curves, use_curves="never")
    assert never["data"]["used"] == "final losses" and never["data"]["reason"] == "use_curves='never'"
    assert never["params"] != rec["params"]


def test_the_closing_hook_keeps_final_losses_when_the_checkpoints_predict_worse():
    curves, ids, N, D, _ = family("wsd", GRID, noise=0.01, seed=0, every=10)
    selection = Selection(used=_records(N, D, curves), excluded=[])
    rec = plan_next_run(selection, n_bootstrap=0, curves=curves)
    mape = rec["data"]["backtest_mape"]
    assert mape["whole_curve"] >= mape["final_only"]
    assert rec["data"]["used"] == "final losses" and "is not below" in rec["data"]["reason"]
    forced = plan_next_run(selection, n_bootstrap=0, curves=curves, use_curves="always")
    assert forced["data"]["used"] == "final losses and schedule-corrected checkpoints"


def test_a_sparse_run_gives_its_final_loss_only():
    curves, ids, N, D, _ = family("wsd", GRID, noise=0.01, seed=1, every=10)
    records = _records(N, D, curves)
    dense = plan_next_run(Selection(used=records, excluded=[]), n_bootstrap=0, curves=curves, use_curves="always")
    pruned = replace(records[-1], params=0.6 * records[-1].params, sparsity=0.5)  # N_avg below the dense count
    mixed = plan_next_run(Selection(used=records[:-1] + [pruned], excluded=[]), n_bootstrap=0, curves=curves,
                          use_curves="always")
    assert mixed["params_column"] == "params_avg"
    assert mixed["data"]["checkpoint_points"] == dense["data"]["checkpoint_points"] - 6


def test_use_curves_is_checked():
    with pytest.raises(ConfigurationError, match="use_curves"):
        plan_next_run(Selection(used=[], excluded=[]), curves=[], use_curves="sometimes")


def _correction_errors(points, laws, D, kind):
    """|correction - true correction| / loss per checkpoint: the truth is the shorter run's final loss minus the
    noiseless loss of the run at the checkpoint."""
    out = []
    for run, d, loss, measured in zip(points.run, points.D, points.loss, points.measured):
        k, T = int(round(d / TOKENS_PER_STEP)), int(round(D[run] / TOKENS_PER_STEP))
        S1, S2 = schedule_areas(np.arange(1, T + 1), schedule(T, kind), MOMENTUM)
        clean = float(laws[run].loss(S1[k - 1], S2[k - 1]))
        out.append(abs((loss - measured) - (short_run_final(laws[run], k, kind) - clean)) / loss)
    return np.array(out)


@pytest.mark.parametrize("seed", range(4))
def test_runs_of_one_model_share_the_annealing_law_which_measures_the_correction(seed, monkeypatch):
    # 1% noise on 8 validations per run: one run alone barely sees its decay; its size's other lengths do
    curves, ids, N, D, laws = family("wsd", GRID, noise=0.01, seed=seed, every=10)
    points = schedule_corrected(curves, ids, N, D, {i: 0.2 for i in ids})
    assert points.models == 5 and points.to_dict()["curve_law"]["models"] == 5
    assert 0.98 <= points.momentum <= 0.995  # the truth is 0.99
    shared = _correction_errors(points, laws, D, "wsd")
    assert shared.mean() < 0.005
    monkeypatch.setattr(checkpoints, "model_key", lambda params, tokens, curve: curve.run)  # each run its own law
    alone = _correction_errors(schedule_corrected(curves, ids, N, D, {i: 0.2 for i in ids}), laws, D, "wsd")
    assert alone.mean() > shared.mean() + 0.001


def test_a_model_is_a_size_a_peak_learning_rate_and_a_batch():
    steps = np.arange(10, 1001, 10)
    lr = schedule(1000, "wsd")[steps - 1]
    base = Curve("a", steps, lr, np.full(len(steps), np.nan))
    key = model_key(1e6, 1000 * TOKENS_PER_STEP, base)
    longer = Curve("b", np.arange(10, 2001, 10), schedule(2000, "cosine")[9::10], np.full(200, np.nan))
    assert model_key(1e6, 2000 * TOKENS_PER_STEP, longer) == key  # another length and schedule: the same model
    assert model_key(2e6, 1000 * TOKENS_PER_STEP, base) != key
    assert model_key(1e6, 2000 * TOKENS_PER_STEP, base) != key  # twice the tokens per step
    assert model_key(1e6, 1000 * TOKENS_PER_STEP, Curve("c", steps, 2 * lr, base.loss)) != key


def test_inside_the_final_losses_hull():
    N, D = np.array([1e6, 1e7, 1e6, 1e7]), np.array([1e9, 1e9, 1e10, 1e10])
    inside = inside_hull(N, D, [3e6, 1e6, 1e6, 3e6, 1e5], [3e9, 5e9, 5e8, 2e10, 3e9])
    assert inside.tolist() == [True, True, False, False, False]  # the second on the edge: the same N as two runs
    assert not inside_hull([1e6, 1e6, 1e6], [1e9, 2e9, 4e9], [1e6], [2e9]).any()  # one size spans no area


def test_the_backtest_fits_no_checkpoint_outside_its_training_runs_hull():
    curves, ids, N, D, _ = family("wsd", GRID, noise=0.003, seed=0, every=10)
    L = np.array([c.loss[np.isfinite(c.loss)][-1] for c in curves])
    points = schedule_corrected(curves, ids, N, D, {i: 0.2 for i in ids}).within(N, D)
    base = backtest(ChinchillaFit, N, D, L, checkpoints=points)["mape"]

    def plus(n, d, loss, k=40):  # k more checkpoints of the first run, 30% above the law
        return replace(points, run=np.append(points.run, [0] * k), N=np.append(points.N, [n] * k),
                       D=np.append(points.D, [d] * k), loss=np.append(points.loss, [loss] * k),
                       measured=np.append(points.measured, [loss] * k))

    below = plus(N.min(), 0.5 * D.min(), 1.3 * L.max())  # fewer tokens than any run: outside every fold's hull
    assert backtest(ChinchillaFit, N, D, L, checkpoints=below)["mape"] == base
    within = plus(N.min(), D.min(), 1.3 * L.max())  # on the hull's edge: they are fitted
    assert backtest(ChinchillaFit, N, D, L, checkpoints=within)["mape"] > base + 0.05
