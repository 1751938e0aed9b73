"""Forecasting the rest of a run from its first part and other runs' curves (`curves.forecast`), the curve CSV and
`lightning-scaling forecast`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.forecast import SCHEDULES, schedule, synthetic_runs
from lightning_scaling.cli import main
from lightning_scaling.curves.annealing import AnnealingLaw, schedule_areas
from lightning_scaling.curves.forecast import Forecaster, forecast
from lightning_scaling.curves.shared_fit import MOMENTUM_GRID, Curve, fit_shared
from lightning_scaling.errors import ScalingDataError
from lightning_scaling.evaluation.folds import conformal_quantile
from lightning_scaling.runs.curve_table import read_curves_csv


def run_curve(name, law, lr, noise=0.002, seed=0, every=10):
    T = len(lr)
    steps = np.arange(1, T + 1, dtype=float)
    S1, S2 = schedule_areas(steps, lr, law.momentum)
    loss = law.loss(S1, S2) * np.exp(np.random.default_rng(seed).normal(0.0, noise, T))
    at = np.arange(every, T + 1, every) - 1
    return Curve(name, steps[at], lr[at], loss[at]), float(law.loss(S1, S2)[-1])


def sized_law(size, momentum=0.99):
    return AnnealingLaw(L0=2.0 + 1.5 / size ** 0.3, A=1.2 * size ** -0.1, C=0.25 * size ** -0.1, alpha=0.5,
                        momentum=momentum)


def pool_of(n=10, momentum=0.99, seed=0):
    sizes = np.geomspace(1, 30, n)
    return [run_curve(f"p{i}", sized_law(s, momentum), schedule(SCHEDULES[i % 4], 2000), seed=seed + i)[0]
            for i, s in enumerate(sizes)]


def test_the_shared_fit_recovers_alpha_and_the_momentum():
    fit = fit_shared(pool_of(momentum=0.99))
    assert fit.momentum == 0.99
    assert abs(fit.alpha - 0.5) < 0.03
    c = fit.coefficients["p3"]
    law = sized_law(np.geomspace(1, 30, 10)[3])
    assert abs(c[0] - law.L0) / law.L0 < 0.02


def cooldown_runs(momentum, n=6, T=2000, seed=0):
    """Runs at a constant learning rate with cooldown branches from 25%, 50% and 75% of the run (10% more steps,
    decayed linearly to 0): their gains tell the momentum."""
    rng = np.random.default_rng(seed)
    curves = []
    for i, size in enumerate(np.geomspace(1, 30, n)):
        law = AnnealingLaw(L0=2.0 + 1.5 / size ** 0.3, A=1.2 * size ** -0.1, C=20.0 * size ** -0.1, alpha=0.5,
                           momentum=momentum)
        main_curve, _ = run_curve(f"r{i}", law, np.full(T, 1e-3), seed=seed + i)
        curves.append(main_curve)
        for start in (T // 4, T // 2, 3 * T // 4):
            end = int(start * 1.1)
            lr = np.concatenate([np.full(start, 1e-3), np.linspace(1e-3, 0.0, end - start + 1)[1:]])
            S1, S2 = schedule_areas(np.arange(1, end + 1), lr, momentum)
            loss = law.loss(S1, S2)[-1] * np.exp(rng.normal(0.0, 0.002))
            curves.append(Curve(f"r{i}", np.array([1.0, start, end]), np.array([1e-3, 1e-3, 0.0]),
                                np.array([np.nan, np.nan, loss])))
    return curves


def test_the_momentum_is_fitted_where_cooldowns_of_several_lengths_tell_it():
    curves = cooldown_runs(0.9)
    fitted = fit_shared(curves)
    fixed = fit_shared(curves, momentum=0.999)
    assert fitted.momentum == 0.9
    assert abs(fitted.alpha - 0.5) < 0.05
    # 0.999 leaves the branches' gains misfitted by far more than the noise (0.2%: 4e-6 per point) explains
    assert fixed.objective - fitted.objective > 100 * 0.002 ** 2
    assert all(fitted.c_measured.values())


@pytest.mark.parametrize("name", SCHEDULES)
def test_forecast_from_30_percent_is_within_one_percent(name):
    law = sized_law(5.0)
    target, truth = run_curve("t", law, schedule(name, 3000), seed=99)
    fc = forecast(target.until(0.3 * target.final_step), pool_of())
    loss, low, high = fc.final
    assert abs(loss / truth - 1) < 0.01
    assert low <= loss < high  # the interval always holds the point (a one-sided error quantile is not shifted)
    assert fc.method.startswith("conformal over")
    assert fc.steps[0] > 0.3 * 3000 and fc.steps[-1] == 3000
    # the band widens from the last observed step to the end
    assert (fc.high - fc.low)[0] < (fc.high - fc.low)[-1]


def test_the_interval_is_the_conformal_quantile_of_the_other_runs_errors():
    pool = pool_of(12)
    target, _ = run_curve("t", sized_law(5.0), schedule("cosine", 2000), seed=5)
    forecaster = Forecaster(pool, confidence=0.8)
    fc = forecaster.forecast(target.until(600))
    runs = [c.run for c in pool]
    main_curve = max([target], key=lambda c: c.final_step)
    errors = list(forecaster._errors(runs, forecaster.shape, main_curve, fc.progress)[0].values())
    assert len(errors) == 12
    upper = np.sort(errors)[int(np.ceil(13 * 0.9)) - 1]
    lower = np.sort(errors)[13 - int(np.ceil(13 * 0.9)) - 1]  # the floor(13 * 0.1)-th smallest
    loss, low, high = fc.final
    assert high == pytest.approx(loss * (1 + max(upper, 0.0)), rel=1e-12)
    assert low == pytest.approx(loss * (1 + min(lower, 0.0)), rel=1e-12)


def test_conformal_quantile():
    errors = np.arange(1.0, 10.0)  # 9 errors
    assert conformal_quantile(errors, 0.9) == 9.0  # ceil(10 * 0.9) = 9th
    assert conformal_quantile(errors, 0.5) == 5.0  # ceil(10 * 0.5) = 5th
    assert conformal_quantile(errors, 0.95) == math.inf  # the 10th of 9: too few for that level
    assert conformal_quantile([], 0.5) == math.inf


def test_before_the_decay_c_is_the_median_of_the_other_runs():
    pool = pool_of()
    target, truth = run_curve("t", sized_law(5.0), schedule("wsd", 3000), seed=1)
    early = target.until(0.3 * target.final_step)  # WSD's stable phase: S2 = 0, C not measured
    forecaster = Forecaster(pool)
    fc = forecaster.forecast(early)
    measured = [forecaster.shape.coefficients[c.run][2] for c in pool if forecaster.shape.c_measured[c.run]]
    assert fc.c_borrowed and fc.law.C == pytest.approx(float(np.median(measured)))
    assert abs(fc.final[0] / truth - 1) < 0.01
    # alone, the decay's gain is unknown: left out, said so, and the forecast is above the truth
    alone = forecast(early)
    assert not alone.c_borrowed and alone.law.C == 0.0
    assert any("upper bound" in n for n in alone.notes)
    assert alone.final[0] > truth
    assert alone.method.startswith("bootstrap")


def test_a_forecaster_forecasts_in_milliseconds_once_fitted():
    import time

    forecaster = Forecaster(pool_of(20))
    target, _ = run_curve("t", sized_law(5.0), schedule("power", 2000), seed=3)
    t0 = time.perf_counter()
    for cut in range(400, 1400, 100):
        forecaster.forecast(target.until(cut))
    per = (time.perf_counter() - t0) / 10
    assert per < 0.5  # generous for a loaded machine; benchmarks/forecast.py measures it


def test_branches_of_one_run_share_its_coefficients():
    curves = [c for c in cooldown_runs(0.9, n=2) if c.run == "r1"]
    fit = fit_shared(curves, momentum=0.9)
    assert set(fit.coefficients) == {"r1"} and fit.c_measured["r1"]
    assert fit.coefficients["r1"][2] == pytest.approx(20.0 * 30 ** -0.1, rel=0.2)
    # without its branches the run's C is not measured (constant learning rate: S2 = 0)
    alone = fit_shared(curves[:1], momentum=0.9)
    assert alone.coefficients["r1"][2] == 0.0


# -- curve CSV and the command ------------------------------------------------------------------------------------
def write_curves(path, runs, target, cut):
    lines = ["run,step,tokens,lr,loss"]
    for name, (curve,) in runs.items():
        for s, lr, loss in zip(curve.steps, curve.lr, curve.loss):
            hidden = name == target and s > cut
            lines.append(f"{name},{int(s)},{int(s) * 1024},{float(lr)!r},{'' if hidden else repr(float(loss))}")
    path.write_text("\n".join(lines) + "\n")


def test_forecast_command_json_and_text(tmp_path, capsys):
    runs = synthetic_runs(2, n_runs=10)
    target = next(iter(runs))
    (curve,) = runs[target]
    write_curves(tmp_path / "c.csv", runs, target, 0.3 * curve.final_step)
    assert main(["forecast", str(tmp_path / "c.csv"), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["forecast"]
    planned = curve.steps[curve.steps > 0.3 * curve.final_step]
    assert [r["step"] for r in rows] == planned.astype(int).tolist()
    assert rows[-1]["tokens"] == curve.final_step * 1024
    assert all(r["loss_low"] <= r["loss"] <= r["loss_high"] for r in rows)
    assert abs(rows[-1]["loss"] / curve.loss[-1] - 1) < 0.02
    assert out["fit"]["runs"] == 10 and out["method"].startswith("conformal over 9")
    assert main(["forecast", str(tmp_path / "c.csv"), "--confidence", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "annealing law" in text and "50%" in text and f"{int(curve.final_step):>10d}" in text


@pytest.mark.parametrize("content, message", [
    ("step,lr\n1,0.1\n", "missing column(s) loss"),
    ("step,lr,loss\n1,0.1,2.0\n2,x,\n", "line 3: column `lr` is 'x', not a number"),
    ("step,lr,loss\n1,0.1,2.0\n1,0.1,\n", "line 3: column `step` is 1, not after the previous row"),
    ("step,lr,loss\n1,0.1,2.0\n2,0.1,1.9\n", "no row with an empty `loss`"),
    ("run,step,lr,loss\na,1,0.1,\nb,1,0.1,\n", "forecast one run at a time"),
    ("step,lr,loss\n1.5,0.1,2.0\n", "line 2: column `step` is '1.5'"),
    ("step,lr,loss\n1,0.1,-2\n", "line 2: column `loss` is '-2'"),
    ("step,lr,loss\n1,inf,2\n", "not a finite number"),
])
def test_bad_curve_files_are_refused_naming_line_and_column(tmp_path, capsys, content, message):
    path = tmp_path / "c.csv"
    path.write_text(content)
    with pytest.raises(ScalingDataError, match=None) as info:
        read_curves_csv(path)
    assert message in str(info.value)
    assert main(["forecast", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_too_few_observed_points_and_bad_confidence_are_refused(tmp_path, capsys):
    path = tmp_path / "c.csv"
    path.write_text("step,lr,loss\n10,0.001,3.0\n20,0.001,\n30,0.001,\n")
    assert main(["forecast", str(path)]) == 2
    assert "needs at least" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["forecast", str(path), "--confidence", "1.5"])
    with pytest.raises(SystemExit):
        main(["forecast", str(path), "--momentum", "1"])


def test_momentum_grid_contains_the_papers_default():
    assert 0.999 in MOMENTUM_GRID and 0.0 in MOMENTUM_GRID


def test_alone_a_forecast_needs_five_points_with_other_runs_two():
    target, _ = run_curve("t", sized_law(5.0), schedule("cosine", 2000), seed=4, every=100)
    early = target.until(400)  # 4 observed points
    with pytest.raises(ScalingDataError, match="without other runs a forecast needs at least 5"):
        forecast(early)
    assert forecast(early, pool_of(4)).final[0] > 0
    with pytest.raises(ScalingDataError, match="a forecast needs at least 2"):
        forecast(target.until(100), pool_of(4))
