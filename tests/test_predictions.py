"""Predictions: calibrated intervals, degenerate fits, law forms chosen by backtest, the isoFLOP and Huber pins."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import TRUE_LAW, grid_runs

from benchmarks.hoffmann_grid import hoffmann_grid_fit, random_box_starts
from lightning_scaling import ChinchillaFit
from lightning_scaling.errors import ConfigurationError, ScalingDataError
from lightning_scaling.evaluation.backtest import SELECTION_T, backtest, choose_form
from lightning_scaling.evaluation.folds import conformal_quantile, forward_folds
from lightning_scaling.evaluation.intervals import calibrate
from lightning_scaling.law.allocation import compute_optimal
from lightning_scaling.law.bootstrap import percentile_interval
from lightning_scaling.law.isoflop import isoflop_groups
from lightning_scaling.law.objective import HUBER_DELTA
from lightning_scaling.law.separable import DataConstrainedFit, ExponentInteractionFit
from lightning_scaling.law.synthetic import synthetic_runs
from lightning_scaling.planner.next_run import plan_next_run
from lightning_scaling.planner.predict import predict_points, select_law
from lightning_scaling.plugins import law_forms
from lightning_scaling.runs.records import RunRecord, Selection

BUDGETS = [1e17, 3e17, 1e18, 3e18, 1e19, 3e19]


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def records(N, D, L):
    return [RunRecord(run_id=f"r{i}", schema="1", params=float(n), params_dense=float(n), tokens=float(d),
                      flops=6.0 * n * d, loss=float(x)) for i, (n, d, x) in enumerate(zip(N, D, L))]


# -- percentiles ----------------------------------------------------------------------------------------------
def test_bootstrap_percentiles_are_the_10th_and_90th_at_80_percent():
    samples = np.arange(1, 1001, dtype=float)
    assert percentile_interval(samples, 0.8) == (100.0, 900.0)  # a 5th-95th mistake gives (50, 950)
    assert percentile_interval(samples, 0.9) == (50.0, 950.0)
    # the conformal quantile is the ceil((n + 1) p)-th smallest, not the plain p-quantile
    assert conformal_quantile(samples, 0.8) == 801.0
    assert conformal_quantile(samples[:3], 0.8) == math.inf  # too few scores for an 80% quantile


# -- isoFLOP parabola -----------------------------------------------------------------------------------------
def test_isoflop_minimum_is_the_law_optimum_on_noise_free_runs():
    N, D, L = synthetic_runs(TRUE_LAW, [1e18, 1e19, 1e20], sizes_per_budget=7, spread=30.0, noise=0.0)
    groups, _ = isoflop_groups(N, D, L)
    assert len(groups) == 3
    for g in groups:
        truth = compute_optimal(TRUE_LAW, g.flops).params
        # a parabola in log N: within a few percent (a parabola in N puts it 30-60% off on a 30x spread)
        assert g.params_opt == pytest.approx(truth, rel=0.04), g.flops
        assert g.interior


# -- the Huber delta ------------------------------------------------------------------------------------------
def test_the_default_huber_delta_is_robust_to_outliers_where_least_squares_is_not():
    N, D, L = grid_runs(noise=0.003, seed=3)
    L = L.copy()
    L[[4, 11, 17]] *= (1.08, 0.93, 1.10)  # three diverged or mislogged runs
    default = quiet(ChinchillaFit().fit, N, D, L)
    squares = quiet(ChinchillaFit(delta=1.0).fit, N, D, L)  # delta larger than any residual: least squares
    assert default.delta == HUBER_DELTA == 1e-3
    assert default.alpha_ == pytest.approx(TRUE_LAW.alpha, rel=0.04)
    assert default.beta_ == pytest.approx(TRUE_LAW.beta, rel=0.04)
    # least squares is pulled away by the outliers: the default answer differs
    assert abs(squares.alpha_ - TRUE_LAW.alpha) + abs(squares.beta_ - TRUE_LAW.beta) > 3 * (
        abs(default.alpha_ - TRUE_LAW.alpha) + abs(default.beta_ - TRUE_LAW.beta))


# -- degenerate fits ------------------------------------------------------------------------------------------
def _grid():
    N, D = np.meshgrid(np.geomspace(1e7, 1e9, 5), np.geomspace(1e9, 1e11, 5))
    return N.ravel(), D.ravel()


def _noisy(L, seed, sd=0.005):
    return L * np.exp(np.random.default_rng(seed).normal(0, sd, L.size))


def box_optimum(N, D, L, starts=60, exponent_max=3.0):
    return hoffmann_grid_fit(N, D, L, starts=random_box_starts(starts, exponent_max), exponent_max=exponent_max)[1]


def test_loss_without_n_dependence_is_refused_with_the_runs_to_add():
    N, D = _grid()
    L = _noisy(1.8 + 400 / D**0.3, 0)
    fit = quiet(ChinchillaFit().fit, N, D, L)
    flagged = {(d["parameter"], d["kind"]) for d in fit.degenerate_}
    assert flagged & {("alpha", "bound"), ("A", "vanishing")}, fit.degenerate_
    assert fit.to_dict()["degenerate"] and fit.boundary_
    rec = plan_next_run(Selection(records(N, D, L), []), n_bootstrap=0, law_forms=law_forms())
    assert rec["status"] == "degenerate"
    assert "params" not in rec and "loss_low" not in rec  # no run size, never N = 0.07
    assert rec["sentence"].startswith("No run size is recommended")
    assert "along N" in rec["sentence"] and len(rec["suggestions"]) == 3
    assert rec["figures"]["frontier"]["flops"]  # the law as fitted is still drawn


def test_loss_without_d_dependence_is_refused():
    N, D = _grid()
    L = _noisy(1.8 + 400 / N**0.3, 3)
    rec = plan_next_run(Selection(records(N, D, L), []), n_bootstrap=0, law_forms={"chinchilla": ChinchillaFit})
    assert rec["status"] == "degenerate"
    assert all(d["axis"] == "D" for d in rec["degenerate"])


@pytest.mark.parametrize("case", ["alpha beyond 3", "no N dependence"])
def test_at_a_bound_the_search_returns_the_box_optimum(case):
    N, D = _grid()
    L = (_noisy(1.8 + 1e30 / N**4 + 400 / D**0.3, 2, 0.003) if case == "alpha beyond 3"
         else _noisy(1.8 + 400 / D**0.3, 0))
    fit = quiet(ChinchillaFit().fit, N, D, L)
    assert fit.objective_ <= box_optimum(N, D, L) * (1 + 1e-6)
    if case == "alpha beyond 3":
        assert fit.alpha_ == pytest.approx(fit.exponent_max)
        assert ("alpha", "bound") in {(d["parameter"], d["kind"]) for d in fit.degenerate_}


def test_e_at_zero_is_flagged_but_the_allocation_stands():
    # runs that flatten less than any E >= 0 allows: the best fit puts E on its bound 0
    N, D, _ = grid_runs()
    L = _noisy(480.0 / N**0.35 + 2100.0 / D**0.37 - 0.3, 6, 0.002)
    fit = quiet(ChinchillaFit().fit, N, D, L)
    e = [d for d in fit.degenerate_ if d["parameter"] == "E"]
    assert e and not e[0]["refuses"] and any("E =" in m for m in fit.boundary_)
    rec = plan_next_run(Selection(records(N, D, L), []), n_bootstrap=0, law_forms={"chinchilla": ChinchillaFit})
    assert rec["status"] == "ok"
    assert rec["params"] > 0 and rec["loss_low"] < rec["loss"] < rec["loss_high"]
    assert any("E =" in m for m in rec["boundary"])  # said in the recommendation too


# -- calibrated intervals -------------------------------------------------------------------------------------
def test_calibrated_intervals_cover_larger_runs_at_about_their_nominal_rate():
    """Fit the lowest 80% by compute of many seeded suites, predict the top 20%: coverage near 80%, and the
    interval grows with the distance extrapolated."""
    covered, total, widths = 0, 0, []
    for seed in range(6):
        N, D, L = synthetic_runs(TRUE_LAW, np.geomspace(1e17, 1e20, 8), sizes_per_budget=5, noise=0.01, seed=seed)
        order = np.argsort(6 * N * D)
        train, test = order[:32], order[32:]
        cal = quiet(calibrate, ChinchillaFit, N[train], D[train], L[train], 0.8)
        assert cal.calibrated and cal.n_held_out >= 8
        low, high = cal.interval(N[test], D[test])
        covered += int(np.sum((L[test] >= low) & (L[test] <= high)))
        total += len(test)
        widths.append(np.median((high - low) / L[test]))
        near, far = cal.half_width(N[train][-1:], D[train][-1:]), cal.half_width(N[test][-1:] * 10, D[test][-1:] * 10)
        assert far[0] > near[0]
    assert 0.65 <= covered / total <= 1.0, covered / total
    assert np.median(widths) < 0.08  # not an interval wide enough to cover anything


def test_the_recommendation_uses_the_calibrated_interval_and_says_what_it_means():
    N, D, L = synthetic_runs(TRUE_LAW, BUDGETS, sizes_per_budget=5, noise=0.005, seed=1)
    rec = plan_next_run(Selection(records(N, D, L), []), n_bootstrap=100, law_forms=law_forms())
    assert rec["status"] == "ok"
    assert rec["intervals"]["loss"] == "calibrated" and rec["intervals"]["calibrated"]
    assert "forward chaining" in rec["intervals"]["meaning"]
    cal = quiet(calibrate, ChinchillaFit, N, D, L, 0.8, fit_kwargs={"params_column": "params"})
    if rec["law"] == "chinchilla":
        low, high = cal.interval(rec["params"], rec["tokens"])
        assert (rec["loss_low"], rec["loss_high"]) == pytest.approx((float(low), float(high)), rel=1e-9)
    assert rec["loss_low"] < rec["loss"] < rec["loss_high"]
    assert rec["params_low"] <= rec["params"] <= rec["params_high"]
    assert set(rec["law_selection"]["predictions"]) == {"chinchilla", "exponent_interaction"}
    assert rec["backtest"]["sentence"].startswith("the law fitted on budgets below")


def test_with_few_runs_the_interval_says_it_is_not_calibrated():
    N, D, L = grid_runs(noise=0.01, sizes=(1e7, 1e8, 1e9), tokens=(1e9, 1e10, 1e11))
    rec = plan_next_run(Selection(records(N, D, L), []), n_bootstrap=100, law_forms={"chinchilla": ChinchillaFit})
    assert rec["status"] == "ok" and rec["intervals"]["loss"] == "bootstrap+scatter"
    assert "NOT calibrated" in rec["intervals"]["meaning"]
    assert rec["loss_low"] < rec["loss"] < rec["loss_high"]


# -- law forms chosen by forward-chaining error -----------------------------------------------------------------
def test_forward_folds_are_disjoint_and_extrapolate():
    N, D, L = synthetic_runs(TRUE_LAW, BUDGETS, sizes_per_budget=5)
    folds = forward_folds(N, D)
    assert [f.kind for f in folds] == ["isoflop"] * 3  # budgets whose smaller budgets hold half of the runs
    C = 6 * N * D
    for f in folds:
        assert C[f.train].max() < C[f.test].min()
    tested = np.concatenate([f.test for f in folds])
    assert len(tested) == len(set(tested.tolist()))


def test_an_exponent_that_moves_with_n_is_chosen_when_the_data_asks_for_it():
    N, D = (x.ravel() for x in np.meshgrid(np.geomspace(1e7, 3e9, 7), np.geomspace(3e8, 3e11, 7)))
    exponent = 0.30 + 0.05 * np.log(N / np.exp(np.mean(np.log(N))))
    L = _noisy(1.7 + 400 / N**0.34 + 900 / D**exponent, 4, 0.002)
    forms = {"chinchilla": ChinchillaFit, "exponent_interaction": ExponentInteractionFit}
    choice = choose_form(forms, N, D, L)
    assert choice["chosen"] == "exponent_interaction", choice
    assert choice["t"]["exponent_interaction"] > SELECTION_T
    assert "exponent_interaction" in choice["reason"]


def test_chinchilla_is_kept_on_chinchilla_data():
    N, D, L = synthetic_runs(TRUE_LAW, BUDGETS, sizes_per_budget=5, noise=0.01, seed=2)
    choice = choose_form({"chinchilla": ChinchillaFit, "exponent_interaction": ExponentInteractionFit}, N, D, L)
    assert choice["chosen"] == "chinchilla", choice


def test_data_constrained_form_recovers_the_value_of_repeated_tokens():
    N, D = (x.ravel() for x in np.meshgrid(np.geomspace(1e8, 3e9, 5), np.geomspace(1e10, 4e11, 6)))
    U = np.full_like(D, 2e10)
    truth = DataConstrainedFit()
    theta = np.array([0.34, 0.28, math.log(15.0)])
    Dp = truth.effective_data(D, U, theta)
    L = _noisy(1.7 + 400 / N**0.34 + 410 / Dp**0.28, 5, 0.002)
    fit = quiet(DataConstrainedFit().fit, N, D, L, unique_tokens=U)
    assert fit.parameters()["R_star"] == pytest.approx(15.0, rel=0.25)
    assert fit.parameters()["beta"] == pytest.approx(0.28, rel=0.1)
    # a fresh run (no repeats) is predicted with D' = D
    assert float(fit.predict(1e9, 1e10)) == pytest.approx(float(fit.predict(1e9, 1e10, unique_tokens=1e12)))
    with pytest.raises(ScalingDataError, match="unique tokens"):
        DataConstrainedFit().fit(N, D, L)


def test_a_named_form_and_bad_names():
    N, D, L = grid_runs()
    forms = law_forms()
    assert select_law(forms, "chinchilla", N, D, L)[0] == "chinchilla"
    with pytest.raises(ConfigurationError, match=r"`law` must be 'auto' or one of \['chinchilla'"):
        select_law(forms, "kaplan", N, D, L)
    with pytest.raises(ScalingDataError, match=r"needs the column\(s\) \['unique_tokens'\]"):
        select_law(forms, "data_constrained", N, D, L)


# -- the backtest ---------------------------------------------------------------------------------------------
def test_backtest_folds_report_what_they_measured():
    N, D, L = synthetic_runs(TRUE_LAW, BUDGETS, sizes_per_budget=5, noise=0.005, seed=1)
    result = backtest(ChinchillaFit, N, D, L, confidence=0.8)
    folds = forward_folds(N, D)
    assert len(result["folds"]) == len(folds)
    last, fold = result["folds"][-1], folds[-1]
    fit = quiet(ChinchillaFit().fit, N[fold.train], D[fold.train], L[fold.train])
    expected = 100 * np.mean(np.abs(fit.predict(N[fold.test], D[fold.test]) - L[fold.test]) / L[fold.test])
    assert last["mape"] == pytest.approx(expected, rel=1e-6)
    assert last["covered"] is not None and 0 <= last["covered"] <= last["test_runs"]
    # the held-out budget is an isoFLOP group: the law's N_opt against its parabola, close on good data
    assert last["isoflop"] and last["isoflop"][0]["ratio"] == pytest.approx(1.0, abs=0.25)
    assert result["sentence"] == (f"the law fitted on budgets below {fold.test_flops:.2g} predicted the "
                                  f"{fold.test_flops:.2g} runs within {last['mape']:.1f}% (MAPE); its 80% "
                                  f"intervals covered {last['covered']} of {last['test_runs']}")


def test_predict_points_returns_the_interval_at_each_point():
    N, D, L = synthetic_runs(TRUE_LAW, BUDGETS, sizes_per_budget=5, noise=0.005, seed=1)
    rows = predict_points(N, D, L, [1e8, 1e9], [2e9, 2e10], forms={"chinchilla": ChinchillaFit}, law="chinchilla")
    assert [set(r) >= {"params", "tokens", "loss", "loss_low", "loss_high"} for r in rows] == [True, True]
    assert all(r["loss_low"] < r["loss"] < r["loss_high"] and r["interval"] == "calibrated" for r in rows)
    assert rows[1]["loss"] == pytest.approx(float(TRUE_LAW.loss(1e9, 2e10)), rel=0.02)
    # the farther point (10x the compute of the largest run) gets the wider interval
    width = [(r["loss_high"] - r["loss_low"]) / r["loss"] for r in rows]
    assert width[1] > width[0]


def test_another_form_replaces_the_baseline_only_above_paired_t_2():
    """An alternative that predicts better, but with paired t between 0 and 2, does not replace the baseline."""
    from lightning_scaling.evaluation.backtest import _choice, _paired_t

    # differences 2, 2, 3: mean 7/3, sd 1/sqrt(3), so t = (7/3) / (1/3) = 7
    assert _paired_t(np.array([3.0, 4.0, 5.0]), np.array([1.0, 2.0, 2.0])) == pytest.approx(7.0)
    forms = {"chinchilla": {"mape": 2.0, "held_out": 10}, "other": {"mape": 1.5, "held_out": 10}}
    for t, chosen in ((0.5, "chinchilla"), (1.9, "chinchilla"), (2.1, "other"), (-3.0, "chinchilla")):
        assert _choice(["chinchilla", "other"], forms, {"other": t}, 4)[0] == chosen, t
    assert SELECTION_T == 2.0


def _write(path, header, rows):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(f"{v:.6g}" for v in r) for r in rows) + "\n")
    return path


def test_predict_reads_unique_tokens_at_the_points_and_refuses_unknown_columns(tmp_path, capsys):
    """Points that differ only in their unique tokens get different predictions under the data-constrained form;
    a point file without the column that form needs, or with an unknown column, is refused naming it."""
    import json

    from lightning_scaling.cli import main

    N, D = (x.ravel() for x in np.meshgrid(np.geomspace(1e8, 3e9, 5), np.geomspace(1e10, 4e11, 6)))
    U = np.full_like(D, 2e10)
    Dp = DataConstrainedFit().effective_data(D, U, np.array([0.34, 0.28, math.log(15.0)]))
    L = _noisy(1.7 + 400 / N**0.34 + 410 / Dp**0.28, 7, 0.002)
    runs = _write(tmp_path / "runs.csv", ["params", "tokens", "loss", "unique_tokens"], zip(N, D, L, U))
    points = _write(tmp_path / "points.csv", ["params", "tokens", "unique_tokens"],
                    [(1e9, 4e11, 2e10), (1e9, 4e11, 4e11)])
    args = ["predict", str(runs), "--at", str(points), "--law", "data_constrained", "--format", "json"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    repeated, fresh = rows[0]["loss"], rows[1]["loss"]
    assert repeated > fresh + 0.005  # 20 epochs of 2e10 tokens are worth less than 4e11 fresh ones
    for row in rows:
        assert row["loss_low"] < row["loss_high"]
    fit = quiet(DataConstrainedFit().fit, N, D, L, unique_tokens=U)
    assert repeated == pytest.approx(float(fit.predict(1e9, 4e11, unique_tokens=2e10)), rel=0.02)

    bare = _write(tmp_path / "bare.csv", ["params", "tokens"], [(1e9, 4e11)])
    assert main(["predict", str(runs), "--at", str(bare), "--law", "data_constrained"]) == 2
    assert "['unique_tokens']" in capsys.readouterr().err
    odd = _write(tmp_path / "odd.csv", ["params", "tokens", "unique_token"], [(1e9, 4e11, 2e10)])
    assert main(["predict", str(runs), "--at", str(odd)]) == 2
    assert "unknown column(s) ['unique_token']" in capsys.readouterr().err


def test_folds_are_the_budgets_the_runs_were_planned_at():
    """6ND spans 0.90-1.09x of each of six budgets 3x apart: one group per budget (a 10% window from each group's
    smallest run made two of each), and no fold fits on a run of the budget it predicts."""
    from lightning_scaling.evaluation.folds import budget_groups, forward_folds

    rng = np.random.default_rng(0)
    budgets = 1e18 * 3.0 ** np.arange(6)
    N = np.concatenate([np.geomspace(1e8, 1e9, 8) * 3.0 ** (k / 2) for k in range(6)])
    planned = np.repeat(budgets, 8)
    D = planned * rng.uniform(0.90, 1.09, len(planned)) / (6 * N)
    C = 6 * N * D
    groups = budget_groups(C)
    assert len(groups) == 6 and all(len(g) == 8 for g in groups)
    folds = forward_folds(N, D)
    assert folds and all(f.kind == "isoflop" for f in folds)
    for fold in folds:
        predicted = set(planned[fold.test])
        assert len(predicted) == 1 and not predicted & set(planned[fold.train])
    # a budget column (labels) splits what compute alone cannot: two budgets 15% apart
    close = np.array([1.0, 1.02, 1.05, 1.15, 1.17, 1.2])
    assert len(budget_groups(close)) == 1
    labelled = budget_groups(close, np.array(["a", "a", "a", "b", "b", "b"], dtype=object))
    assert [g.tolist() for g in labelled] == [[0, 1, 2], [3, 4, 5]]


def test_the_command_line_keeps_the_budget_column(tmp_path, capsys):
    import json

    from lightning_scaling.cli import main

    budgets = [1e18, 1e18, 1e18, 1.2e18, 1.2e18, 1.2e18, 1.44e18, 1.44e18, 1.44e18, 1.73e18, 1.73e18, 1.73e18]
    N = np.array([1e8, 2e8, 4e8] * 4)
    D = np.array(budgets) / (6 * N)
    L = TRUE_LAW.loss(N, D)
    path = _write(tmp_path / "runs.csv", ["params", "tokens", "loss", "budget"], zip(N, D, L, budgets))
    assert main(["backtest", str(path), "--law", "chinchilla", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["design"].startswith("isoflop") or all(f["test_runs"] == 3 for f in out["folds"]), out["design"]
    assert [f["test_runs"] for f in out["folds"]] == [3] * len(out["folds"]) and len(out["folds"]) >= 2


def test_runs_spread_over_compute_are_folded_by_shares_not_by_wide_budgets():
    from lightning_scaling.evaluation.folds import forward_folds
    from lightning_scaling.law.isoflop import are_budgets, group_by_flops

    rng = np.random.default_rng(3)
    C = np.geomspace(1e17, 1e20, 60) * rng.uniform(0.97, 1.03, 60)  # no two budgets: a continuum
    N = np.sqrt(C / 120)
    D = C / (6 * N)
    assert not are_budgets(C, group_by_flops(C))
    assert {f.kind for f in forward_folds(N, D)} == {"prefix"}
