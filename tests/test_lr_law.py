"""The team's own learning-rate law from sweeps (`planner.hyperparameters`), and the plan that uses it.

Sweeps are simulated from a known law eta* = k N^p D^q with a loss that is a parabola in log lr around it (as
learning-rate sweeps look near their optimum, Li et al. 2025 Fig. 2), plus noise.
"""

from __future__ import annotations

import json
import math

import mlflow
import numpy as np
import pytest

from lightning_scaling.cli import main
from lightning_scaling.planner import plan_stage
from lightning_scaling.planner.family import hyperparameters, with_family
from lightning_scaling.planner.hyperparameters import STEP_LAW_EXPONENTS, fit_lr_law, lr_from_law, lr_sweeps

TRUE = {"k": 40.0, "p": -0.55, "q": 0.18}  # not Step Law's exponents: a fit that keeps them must fail


def sweep_runs(points, factors=(0.25, 0.5, 1.0, 2.0, 4.0), noise=0.002, seed=0, law=TRUE):
    """(N, D, lr, loss) of one sweep per (N, D) point: lrs `factors` times the true optimum (shifted by a factor
    1.3 so the optimum is not a swept value), loss 3 + 0.05 (log lr - log eta*)^2 + noise."""
    rng = np.random.default_rng(seed)
    N, D, lr, L = [], [], [], []
    for n, d in points:
        best = law["k"] * n ** law["p"] * d ** law["q"]
        for f in factors:
            eta = best * f * 1.3
            N.append(n), D.append(d), lr.append(eta)
            L.append(3.0 + 0.05 * math.log(eta / best) ** 2 + noise * rng.standard_normal())
    return tuple(np.array(a) for a in (N, D, lr, L))


GRID = [(n, d) for n in (1e6, 4e6, 1.6e7) for d in (2e7, 1e8, 5e8)]


def test_each_sweeps_vertex_is_its_optimum():
    sweeps, reasons = lr_sweeps(*sweep_runs(GRID[:3], noise=0.0))
    assert not reasons and len(sweeps) == 3
    for s in sweeps:
        truth = TRUE["k"] * s["params"] ** TRUE["p"] * s["tokens"] ** TRUE["q"]
        assert s["lr_opt"] == pytest.approx(truth, rel=1e-6)  # a parabola in log lr is exact here
        assert s["lrs"] == 5 and s["loss_at_opt"] == pytest.approx(3.0, abs=1e-9)


def test_the_law_is_fitted_from_sweeps_over_a_grid_of_sizes_and_tokens():
    law = fit_lr_law(lr_sweeps(*sweep_runs(GRID, noise=0.002, seed=1))[0])
    assert law["fitted"] == ["p", "q"] and law["sweeps"] == 9
    assert law["p"] == pytest.approx(TRUE["p"], abs=0.03)
    assert law["q"] == pytest.approx(TRUE["q"], abs=0.03)
    for n, d in [(3e6, 6e7), (3e7, 1e9)]:  # and predicts the optimum off the grid (one step outside, too)
        truth = TRUE["k"] * n ** TRUE["p"] * d ** TRUE["q"]
        assert float(lr_from_law(law, n, d)) == pytest.approx(truth, rel=0.1)


def test_sweeps_along_one_ratio_fit_one_exponent_and_keep_step_laws_other():
    points = [(n, 20 * n) for n in (1e6, 4e6, 1.6e7)]  # one tokens-per-parameter ratio: p and q not separable
    law = fit_lr_law(lr_sweeps(*sweep_runs(points, noise=0.0))[0])
    assert law["fitted"] == ["p"] and law["q"] == pytest.approx(STEP_LAW_EXPONENTS[1])
    # along the ratio the slope is p + q of the truth; the fitted p absorbs the difference in q
    assert law["p"] + law["q"] == pytest.approx(TRUE["p"] + TRUE["q"], abs=1e-6)
    one = fit_lr_law(lr_sweeps(*sweep_runs(points[:1], noise=0.0))[0])
    assert one["fitted"] == [] and (one["p"], one["q"]) == STEP_LAW_EXPONENTS
    n, d = points[0]
    assert float(lr_from_law(one, n, d)) == pytest.approx(TRUE["k"] * n ** TRUE["p"] * d ** TRUE["q"], rel=1e-6)


def test_sweeps_that_do_not_bracket_the_optimum_or_have_two_rates_are_not_used_with_the_reason():
    low = sweep_runs([(1e6, 2e7)], factors=(0.05, 0.1, 0.2), noise=0.0)  # all below: the optimum above them
    two = sweep_runs([(4e6, 8e7)], factors=(0.5, 2.0), noise=0.0)
    runs = tuple(np.concatenate([a, b]) for a, b in zip(low, two))
    sweeps, reasons = lr_sweeps(*runs)
    assert sweeps == [] and fit_lr_law(sweeps) is None
    assert any("above the learning rates swept" in r and "widen the sweep" in r for r in reasons)
    assert any("2 learning rates (a sweep needs 3)" in r for r in reasons)


def test_the_plan_gives_the_fitted_learning_rate_per_run_and_keeps_the_priors_beside_it():
    plan = with_family(plan_stage(1e21, 4e19), sweeps=sweep_runs(GRID, noise=0.0))
    hp = plan["hyperparameters"]
    assert hp["kind"] == "fit" and "your learning-rate sweeps (9" in hp["why"]
    for r in plan["runs"]:
        h = r["hyperparameters"]
        truth = TRUE["k"] * r["params"] ** TRUE["p"] * r["tokens"] ** TRUE["q"]
        assert h["lr"] == pytest.approx(truth, rel=0.05)
        assert h["lr_step_law"] == pytest.approx(1.79 * r["params"] ** -0.713 * r["tokens"] ** 0.307)
    # no sweeps among the runs (one learning rate each): the priors, and the reason
    N, D, lr, L = sweep_runs(GRID, factors=(1.0,), noise=0.0)
    assert hyperparameters([{"params": 1e8, "tokens": 2e9}], None, (N, D, lr, L))["kind"] == "prior"


def test_plan_reads_learning_rates_from_a_runs_csv_and_names_a_bad_one(tmp_path, capsys):
    N, D, lr, L = sweep_runs(GRID, noise=0.0)
    L = L + 0.5 * (N / 1e6) ** -0.3 + 0.5 * (D / 2e7) ** -0.3  # a loss that also falls with N and D
    csv = tmp_path / "runs.csv"
    csv.write_text("params,tokens,loss,lr\n" + "".join(f"{n},{d},{x},{e}\n" for n, d, x, e in zip(N, D, L, lr))
                   + f"2e6,4e7,{L.mean()},\n")  # a run whose learning rate is not known
    assert main(["plan", str(csv), "--target-flops", "1e19", "--budget", "1e18", "--bootstrap", "0",
                 "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hyperparameters"]["kind"] == "fit"
    assert out["hyperparameters"]["law"]["p"] == pytest.approx(TRUE["p"], abs=0.01)
    bad = tmp_path / "bad.csv"
    bad.write_text("params,tokens,loss,lr\n1e6,2e7,3.1,-0.001\n")
    assert main(["plan", str(bad), "--target-flops", "1e19", "--budget", "1e18"]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "`lr` must be a positive number or empty" in err


def test_the_store_reads_each_runs_peak_learning_rate(tmp_path):
    from lightning_scaling.integrations.mlflow_store import MLflowRunStore
    from lightning_scaling.runs.records import RunRecord

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("lr")
    ids = []
    for peak in (1e-3, 4e-3):
        run = client.create_run(exp)
        for step, f in enumerate((0.1, 0.5, 1.0, 0.7, 0.2), start=1):  # warmup then decay: the peak is not the last
            client.log_metric(run.info.run_id, "scaling/lr", peak * f, step=step)
        ids.append(run.info.run_id)
    ids.append(client.create_run(exp).info.run_id)  # logged no learning rate
    store = MLflowRunStore(uri, experiment_name="lr")
    peaks = store.peak_learning_rates([RunRecord(i) for i in ids])
    assert peaks[:2] == pytest.approx([1e-3, 4e-3]) and math.isnan(peaks[2])


class _Store:
    """A run store that knows each run's peak learning rate (as `MLflowRunStore.peak_learning_rates` reads it)."""

    def __init__(self, lrs):
        self.lrs, self.calls = lrs, 0

    def peak_learning_rates(self, records):
        self.calls += 1
        return [self.lrs[r.run_id] for r in records]


def test_the_closing_hooks_plan_uses_the_stores_sweeps_unless_mup_and_power_lr_transfer():
    from lightning_scaling.callbacks import ScalingLawAdvisor
    from lightning_scaling.runs.records import RunRecord, Selection

    N, D, lr, L = sweep_runs(GRID, noise=0.0)
    L = L + 0.5 * (N / 1e6) ** -0.3 + 0.5 * (D / 2e7) ** -0.3
    records = [RunRecord(run_id=f"r{i}", run_name=f"r{i}", schema="1", params=n, params_dense=n, tokens=d,
                         flops=6 * n * d, loss=x) for i, (n, d, x) in enumerate(zip(N, D, L))]
    store = _Store({f"r{i}": e for i, e in enumerate(lr)})
    advisor = ScalingLawAdvisor(target_flops=1e19, plan_budget=float(6 * (N * D).sum() * 3), bootstrap=50)
    plan = advisor.plan(Selection(used=records, excluded=[]), {}, {}, store)
    hp = plan["hyperparameters"]
    assert hp["kind"] == "fit" and hp["law"]["p"] == pytest.approx(TRUE["p"], abs=0.01) and store.calls == 1
    assert all(r["hyperparameters"]["lr"] > 0 for r in plan["runs"])
    transfer = advisor.plan(Selection(used=records, excluded=[]), {}, {"muP": {}, "PowerLR": {}}, store)
    assert transfer["hyperparameters"]["kind"] == "transfer" and store.calls == 1  # the store is not read
