"""The law across runs as a second forecast of a run's final loss, stacked with its curve's (`curves.stacking`), and
what it changes in `curves.forecast`, the curve CSV and the store's curves."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lightning_scaling.cli import main
from lightning_scaling.curves.forecast import Forecaster, forecast
from lightning_scaling.curves.shared_fit import Curve
from lightning_scaling.curves.stacking import MIN_RUNS, UNLIKE, final_law, stack
from lightning_scaling.errors import ScalingDataError
from lightning_scaling.law.chinchilla import ChinchillaLaw

LAW = ChinchillaLaw(E=1.5, A=400.0, B=600.0, alpha=0.4, beta=0.35)
TOKENS_PER_STEP = 4096


def test_the_weight_is_the_least_squares_mix_of_the_two_error_columns():
    # orthogonal error columns of sizes 1 and 2: the mix w u_law + (1 - w) u_curve has the least sum of squares at
    # w = 2^2 / (1^2 + 2^2) = 0.8; a weight given to the wrong column would be 0.2
    z1 = np.array([1.0, -1.0, 1.0, -1.0, 0.0, 0.0]) * 0.01
    z2 = np.array([1.0, 1.0, -1.0, -1.0, 0.0, 0.0]) * 0.01
    runs = [f"r{i}" for i in range(6)]
    law_errors = dict(zip(runs, z1))
    curve_errors = dict(zip(runs, np.expm1(2.0 * z2)))
    s = stack(2.0, 2.02, law_errors, curve_errors)
    assert s.weight == pytest.approx(0.8, abs=1e-12)
    assert s.loss == pytest.approx(2.0 ** 0.8 * 2.02 ** 0.2, rel=1e-12)  # geometric: the log errors mix linearly
    assert s.runs == 6 and "80%" in s.note
    # each run's stacked error uses the weight chosen on the other runs (nested), not the 0.8 fitted on it too
    u_law, u_curve = z1, 2.0 * z2
    gap = u_curve - u_law
    w0 = np.clip(np.dot(u_curve[1:], gap[1:]) / np.dot(gap[1:], gap[1:]), 0, 1)
    assert s.errors[0] == pytest.approx(math.expm1(u_curve[0] - w0 * gap[0]), rel=1e-12)


def test_too_few_runs_with_both_errors_give_no_stack():
    runs = [f"r{i}" for i in range(MIN_RUNS)]
    errors = {r: 0.01 * (i - 2) for i, r in enumerate(runs)}
    assert stack(2.0, 2.0, errors, {r: 0.0 for r in runs[:-1]}) is None
    assert stack(2.0, 2.0, errors, {r: 0.02 * (i - 2) for i, r in enumerate(runs)}) is not None


def test_a_run_unlike_the_others_follows_its_own_curve():
    runs = [f"r{i}" for i in range(8)]
    rng = np.random.default_rng(0)
    law_errors = dict(zip(runs, rng.normal(0, 0.005, 8)))
    curve_errors = dict(zip(runs, rng.normal(0, 0.02, 8)))
    levels = dict(zip(runs, 0.10 + np.array([-0.03, -0.02, -0.01, 0.0, 0.0, 0.01, 0.02, 0.03])))  # median 0.10
    far = stack(2.0, 2.6, law_errors, curve_errors, levels, 0.10 + UNLIKE * 0.03 * 1.1)
    assert far.weight == 0.0 and far.loss == pytest.approx(2.6) and "followed alone" in far.note
    assert far.errors == pytest.approx(list(curve_errors.values()))  # the interval is the curve's own
    below = stack(2.0, 1.5, law_errors, curve_errors, levels, 0.10 - UNLIKE * 0.03 * 1.1)  # far below, too
    assert below.weight == 0.0
    near = stack(2.0, 2.6, law_errors, curve_errors, levels, 0.10 + UNLIKE * 0.03 * 0.9)
    assert near.weight > 0.5  # the law's errors are four times smaller: it carries the mix
    assert stack(2.0, 2.6, law_errors, curve_errors).weight == near.weight  # without levels: no run is unlike


def chinchilla_runs(n=9, seed=0):
    rng = np.random.default_rng(seed)
    sizes = np.geomspace(1e6, 3e7, n)
    steps = rng.choice([400, 800, 1600, 3200], size=n)
    return [(float(N), int(T), float(LAW.loss(N, T * TOKENS_PER_STEP))) for N, T in zip(sizes, steps)]


def test_the_final_law_recovers_the_law_and_each_runs_error_comes_from_a_fit_without_it():
    runs = chinchilla_runs(12)
    ends = {f"r{i}": (N, T * TOKENS_PER_STEP, L * (1.0 + 0.003 * (-1) ** i)) for i, (N, T, L) in enumerate(runs)}
    law = final_law(ends)
    assert set(law.errors) == set(ends)
    assert law.loss(5e6, 6e6) == pytest.approx(float(LAW.loss(5e6, 6e6)), rel=0.01)
    # a run's error is from the fit without it: corrupting one run's loss by 5% shows in its own error in full
    bad = dict(ends, r3=(ends["r3"][0], ends["r3"][1], ends["r3"][2] * 1.05))
    assert final_law(bad).errors["r3"] > 0.03
    assert final_law(dict(list(ends.items())[:MIN_RUNS - 1])) is None


def sized_curve(name, N, T, every, noise, rng, offset=1.0):
    """A run at a constant learning rate whose loss at each step is the law at its tokens (times `offset`), with
    relative `noise` on the points before the last and a tenth of it on the last (the demo's final loss, after the
    decay, is less noisy than its stable phase)."""
    steps = np.arange(every, T + 1, every, dtype=float)
    loss = np.array([LAW.loss(N, s * TOKENS_PER_STEP) for s in steps]) * offset
    loss *= np.exp(rng.normal(0.0, noise, len(steps)) * np.where(steps < steps[-1], 1.0, 0.1))
    return Curve(name, steps, np.full(len(steps), 1e-3), loss, tokens=steps * TOKENS_PER_STEP, params=N)


def pool_and_target(offset=1.0, noise=0.02, seed=1):
    rng = np.random.default_rng(seed)
    pool = [sized_curve(f"r{i}", N, T, T // 8, noise, rng) for i, (N, T, _) in enumerate(chinchilla_runs(12))]
    N, T = 4e6, 1600
    full = sized_curve("t", N, T, T // 8, noise, rng, offset=offset)
    return pool, full.until(0.3 * T), float(full.loss[-1])


def test_noisy_curves_lean_on_the_law_across_runs():
    pool, target, truth = pool_and_target()
    fc = forecast(target, pool)
    alone = forecast(Curve(target.run, target.steps, target.lr, target.loss), pool)  # no N: the curve alone
    assert fc.across is not None and fc.across.weight > 0.7 and alone.across is None
    assert abs(fc.final[0] / truth - 1) < 0.005 < abs(alone.final[0] / truth - 1)
    assert fc.low[-1] <= truth <= fc.high[-1]
    assert fc.to_dict()["law_across_runs"]["weight"] == pytest.approx(fc.across.weight)
    # the planned curve bends from the run's own forecast after its last point to the stacked final loss
    assert fc.loss[-1] == pytest.approx(fc.across.loss)
    assert abs(fc.loss[0] / alone.loss[0] - 1) < abs(fc.loss[-1] / alone.loss[-1] - 1)


def test_a_hopeless_run_is_not_pulled_to_the_law():
    pool, target, truth = pool_and_target(offset=1.25)
    fc = forecast(target, pool)
    assert fc.across is not None and fc.across.weight == 0.0
    assert fc.final[0] > 1.15 * fc.across.law_loss  # still far above the law: the callback can warn


def test_every_other_run_counts_at_the_same_fraction_though_logged_a_step_apart():
    # runs validated 8 times at round(k T / 8) - 1: the fractions differ by a step; all 12 errors count
    rng = np.random.default_rng(3)
    pool = []
    for i, (N, T, _) in enumerate(chinchilla_runs(12, seed=2)):
        steps = np.array([round(k * T / 8) - 1 for k in range(1, 9)], float)
        loss = np.array([LAW.loss(N, s * TOKENS_PER_STEP) for s in steps]) * np.exp(rng.normal(0, 0.003, 8))
        pool.append(Curve(f"r{i}", steps, np.full(8, 1e-3), loss))
    target = pool[0]
    forecaster = Forecaster(pool[1:])
    fc = forecaster.forecast(target.until(target.steps[1]))
    assert fc.method == "conformal over 11 other runs"


def test_the_curve_csv_carries_params_and_refuses_a_run_with_two(tmp_path, capsys):
    pool, target, truth = pool_and_target()
    lines = ["run,step,tokens,params,lr,loss"]
    for c in [*pool, target]:
        for s, t, lr, loss in zip(c.steps, c.tokens, c.lr, c.loss):
            lines.append(f"{c.run},{int(s)},{t:g},{c.params:g},{float(lr)!r},"
                         f"{'' if math.isnan(loss) else repr(float(loss))}")
    path = tmp_path / "c.csv"
    path.write_text("\n".join(lines) + "\n")
    assert main(["forecast", str(path), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["law_across_runs"]["weight"] > 0.7
    assert abs(out["forecast"][-1]["loss"] / truth - 1) < 0.005
    assert main(["forecast", str(path)]) == 0
    assert "law across runs" in capsys.readouterr().out
    lines[2] = lines[2].replace(f",{pool[0].params:g},", ",123,")
    path.write_text("\n".join(lines) + "\n")
    assert main(["forecast", str(path)]) == 2
    assert "line 3: column `params` is 123, not the" in capsys.readouterr().err
    with pytest.raises(ScalingDataError, match="`params` must be a positive number"):
        Curve("x", np.array([1.0, 2.0]), np.array([1.0, 1.0]), np.array([2.0, np.nan]), params=-1.0)
