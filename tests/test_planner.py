"""One planner: the same runs read from a CSV and from the run store give the same answer, the option groups refuse
bad values naming the field, and the typed answers give the JSON they stand for."""

from __future__ import annotations

import json

import pytest

from lightning_scaling import plugins
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.law.form import shared_fits
from lightning_scaling.law.synthetic import CHINCHILLA_PAPER_LAW as LAW
from lightning_scaling.law.synthetic import synthetic_runs
from lightning_scaling.planner import (
    Advice,
    Family,
    FitOptions,
    NextRunOptions,
    Runs,
    StageOptions,
    advice_text,
    advise,
    backtest_law,
    plan_next_run,
    plan_sweep,
    predict,
    read_runs,
)
from lightning_scaling.runs.records import RunRecord, Selection


def _runs(seed=0):
    return synthetic_runs(LAW, [1e18, 3e18, 1e19, 3e19], sizes_per_budget=5, noise=0.005, seed=seed)


def _selection(N, D, L):
    return Selection(used=[RunRecord(run_id=f"r{i}", run_name=f"r{i}", schema="1", params=float(n),
                                     params_dense=float(n), tokens=float(d), flops=6.0 * n * d, loss=float(x))
                           for i, (n, d, x) in enumerate(zip(N, D, L))], excluded=[])


def _csv(tmp_path, N, D, L):
    path = tmp_path / "runs.csv"
    path.write_text("params,tokens,loss,run_id\n" + "".join(f"{float(n)!r},{float(d)!r},{float(x)!r},r{i}\n"
                                                            for i, (n, d, x) in enumerate(zip(N, D, L))))
    return path


def test_a_csv_and_the_store_give_the_same_recommendation(tmp_path):
    """The same runs once as RUNS.csv and once as the store's selection: the same law form (chosen by backtest),
    the same N_opt and the same calibrated interval."""
    N, D, L = _runs()
    options = FitOptions(n_bootstrap=100, seed=1)
    budget = NextRunOptions(next_flops=1e21)
    from_csv = advise(read_runs(_csv(tmp_path, N, D, L)), options, budget, forms=plugins.law_forms())
    from_store = advise(Runs.from_selection(_selection(N, D, L)), options, budget, forms=plugins.law_forms())
    assert isinstance(from_csv, Advice) and from_csv.status == from_store.status == "ok"
    a, b = from_csv.to_dict(), from_store.to_dict()
    assert a["law"] == b["law"] and a["law_selection"]["chosen"] == b["law_selection"]["chosen"]
    for key in ("params", "params_low", "params_high", "tokens", "loss", "loss_low", "loss_high"):
        assert a[key] == pytest.approx(b[key], rel=1e-12), key
    assert a["intervals"]["loss"] == b["intervals"]["loss"] == "calibrated"
    assert a["backtest"]["mape"] == pytest.approx(b["backtest"]["mape"], rel=1e-12)
    assert a["runs"]["used"][0]["run_id"] == "r0" and set(a) == set(b)
    assert "Train next a model of" in advice_text(from_csv) and "backtest:" in advice_text(from_csv)


def test_the_store_entry_point_is_the_typed_answers_dict():
    N, D, L = _runs()
    selection = _selection(N, D, L)
    rec = plan_next_run(selection, n_bootstrap=0, next_flops=1e21)
    advice = advise(Runs.from_selection(selection), FitOptions(n_bootstrap=0), NextRunOptions(next_flops=1e21))
    assert json.dumps(rec, default=float) == json.dumps(advice.to_dict(), default=float)
    with pytest.raises(ConfigurationError, match=r"unknown option\(s\) \['bootstrap'\]"):
        plan_next_run(selection, bootstrap=10)


def test_a_csv_with_too_few_runs_is_refused_with_the_runs_to_add(tmp_path):
    N, D, L = _runs()
    advice = advise(read_runs(_csv(tmp_path, N[:3], D[:3], L[:3])), FitOptions(n_bootstrap=0),
                    NextRunOptions(next_flops=1e21))
    assert advice.status == "insufficient_runs" and advice.suggestions
    assert advice_text(advice).startswith("Not enough runs to fit the law yet")


@pytest.mark.parametrize("build, field", [
    (lambda: FitOptions(n_bootstrap=5), "n_bootstrap"),
    (lambda: FitOptions(confidence=1.0), "confidence"),
    (lambda: FitOptions(use_curves="sometimes"), "use_curves"),
    (lambda: FitOptions(seed=0.5), "seed"),
    (lambda: NextRunOptions(next_flops=-1.0), "next_flops"),
    (lambda: NextRunOptions(growth=0.0), "growth"),
    (lambda: StageOptions(target_flops=1e21, budget=2e21), "budget"),
    (lambda: StageOptions(target_flops=1e21, budget=1e19, first_share=1.5), "first_share"),
    (lambda: StageOptions(target_flops=1e21, budget=1e19, group_size=2), "group_size"),
    (lambda: StageOptions(target_flops=1e21, budget=1e19, min_steps=0), "min_steps"),
])
def test_option_groups_name_the_field_and_the_value(build, field):
    with pytest.raises(ConfigurationError, match=f"`{field}`"):
        build()


def test_predict_and_backtest_take_the_same_runs_and_options(tmp_path):
    N, D, L = _runs()
    runs = read_runs(_csv(tmp_path, N, D, L))
    rows = predict(runs, [1e8, 1e9], [2e9, 2e10], FitOptions(law="chinchilla"), plugins.law_forms())
    assert [r.to_dict()["law"] for r in rows] == ["chinchilla", "chinchilla"]
    assert all(r.loss_low < r.loss < r.loss_high for r in rows)
    result = backtest_law(runs, FitOptions(law="chinchilla"), plugins.law_forms())
    assert result["form"] == "chinchilla" and result["law_selection"] is None


def test_the_sweeps_plan_shares_the_recommendations_fit(monkeypatch):
    """Inside one `shared_fits`, the closing hook's recommendation and plan fit the runs once."""
    from lightning_scaling.law.fit import ChinchillaFit

    N, D, L = _runs()
    runs = Runs.from_selection(_selection(N, D, L))
    fits = []
    original = ChinchillaFit.fit

    def counting(self, *args, **kwargs):
        if len(args[0]) == len(N):
            fits.append(kwargs.get("labels"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ChinchillaFit, "fit", counting)
    with shared_fits():
        advise(runs, FitOptions(n_bootstrap=0), forms={"chinchilla": ChinchillaFit})
        plan = plan_sweep(runs, StageOptions(target_flops=1e23, budget=1e21, n_bootstrap=0),
                          Family(propose_architecture=plugins.propose_architecture,
                                 hparams={"d_model": 64, "n_layer": 2, "n_head": 4}))
    assert len(fits) == 1 and plan.basis == "fit" and plan.runs
    assert all(r["architecture"]["params"] == r["params"] for r in plan.runs)
    assert plan.to_dict()["hyperparameters"]["kind"] == "prior"


def test_the_command_line_renders_with_the_planners_reports():
    """The command line has no text of its own for the planner's answers: `plan`, `predict` and `backtest` print with
    `planner.report`; the predictions' text is a heading, the columns and one line per point."""
    from lightning_scaling.cli.fitting import BACKTEST, PREDICT
    from lightning_scaling.cli.plan import PLAN
    from lightning_scaling.planner import backtest_text, plan_text, predictions_text

    assert (PLAN.text, PREDICT.text, BACKTEST.text) == (plan_text, predictions_text, backtest_text)
    N, D, L = _runs()
    runs = Runs.from_selection(_selection(N, D, L))
    rows = predict(runs, [1e8, 1e9], [2e9, 2e10], FitOptions(), {"chinchilla": plugins.law_forms()["chinchilla"]})
    lines = predictions_text(rows).splitlines()
    assert lines[0] == "law: chinchilla; 80% prediction intervals (calibrated)" and len(lines) == 2 + len(rows)
    assert lines[2].split()[:3] == ["1e+08", "2e+09", f"{rows[0].loss:.4f}"]


def test_count_intervals_are_clipped_to_what_a_run_can_have_and_say_so():
    """A bootstrap bound in a degenerate corner (1e-25 parameters) is shown at the plausible floor, saying so."""
    from lightning_scaling.planner.report import recommendation_sentence
    from lightning_scaling.planner.wording import count_interval

    rec = {"params": 3e4, "params_low": 1e-25, "params_high": 5e4, "tokens": 1e6, "tokens_low": 5e5,
           "tokens_high": 2e6, "tokens_per_param": 33.3, "flops": 1.8e11, "loss": 1.9, "loss_low": 1.8,
           "loss_high": 2.0, "confidence": 0.8}
    assert count_interval(rec, "params", "params") == "10..50k (clipped below at what a run can have)"
    assert count_interval(rec, "tokens", "tokens") == "500k..2M"
    assert "N in 10..50k (clipped below" in recommendation_sentence(rec)
    assert "1e-25" not in recommendation_sentence(rec)


def test_compute_is_the_runs_measured_flops_when_data_is_not_tokens():
    """D in samples: 6ND is no FLOP count; the sentence states the runs' own measured FLOPs per parameter per sample
    (here 420 = 70 x 6), labelled, and the compute at that rate."""
    from lightning_scaling.planner.report import recommendation_markdown
    from lightning_scaling.planner.wording import compute_words

    used = [{"params": n, "tokens": d, "flops": 420.0 * n * d, "compute_6nd": 6.0 * n * d}
            for n, d in ((1e5, 1e6), (2e5, 1e6), (4e5, 2e6))]
    rec = {"status": "ok", "params": 3e5, "tokens": 5e6, "tokens_per_param": 16.7, "flops": 6 * 3e5 * 5e6,
           "loss": 0.5, "data_unit": "samples", "runs": {"used": used, "excluded": []}, "sentence": "",
           "n_runs": 3}
    words = compute_words(rec)
    assert words == f"{420 * 3e5 * 5e6:.3g} FLOPs at the runs' measured 420 FLOPs per parameter per sample"
    assert compute_words({**rec, "runs": {"used": [], "excluded": []}}).startswith("6ND = 9e+12 with D in samples")
    assert compute_words({**rec, "data_unit": "tokens"}) == "9e+12 FLOPs"
    assert "| compute | 6.3e+14 FLOPs at the runs' measured 420" in recommendation_markdown(rec)
