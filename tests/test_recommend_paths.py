"""`recommend` gives one answer whichever way the runs come: the same runs once as RUNS.csv and once logged to an
MLflow experiment (as `ScalingTracker` logs them: the schema tag, N, D, C and the final loss) choose the same law
form by backtest, the same N_opt, predicted loss and calibrated interval, and refuse a degenerate fit alike."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from lightning_scaling.cli import main
from lightning_scaling.law import CHINCHILLA_PAPER_LAW, synthetic_runs
from lightning_scaling.runs import FLOPS, PARAMS_AVG, SCHEMA_TAG, SCHEMA_VERSION, TOKENS

BUDGETS = (1e18, 3e18, 1e19, 3e19)  # four isoFLOP groups: enough for the forward-chaining backtest to choose
NEXT_FLOPS = "1e21"
AGREE = 1e-9  # the two paths fit the same numbers: they may differ by the order of a sum, no more


def _runs(noise=0.005, seed=0):
    """20 runs (5 sizes at each of 4 budgets) from Chinchilla's published law with log-normal noise."""
    return synthetic_runs(CHINCHILLA_PAPER_LAW, list(BUDGETS), sizes_per_budget=5, noise=noise, seed=seed)


def _write_csv(path, N, D, L):
    path.write_text("params,tokens,loss,run_id\n" + "".join(
        f"{float(n)!r},{float(d)!r},{float(x)!r},r{i}\n" for i, (n, d, x) in enumerate(zip(N, D, L))))
    return path


def _log_runs(uri: str, experiment: str, N, D, L) -> None:
    """Each run as a finished run of the schema, with its final N, D, C and loss."""
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment(experiment)
    for i, (n, d, x) in enumerate(zip(N, D, L)):
        run = client.create_run(exp, run_name=f"r{i}", tags={SCHEMA_TAG: SCHEMA_VERSION})
        for key, value in ((PARAMS_AVG, n), (TOKENS, d), (FLOPS, 6.0 * n * d), ("val_loss", x)):
            client.log_metric(run.info.run_id, key, float(value))
        client.set_terminated(run.info.run_id, "FINISHED")


def _recommend(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(["recommend", *map(str, argv), "--flops", NEXT_FLOPS, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def _sources(folder, N, D, L) -> tuple[list, list]:
    """The runs as RUNS.csv and as an MLflow experiment: the arguments of `recommend` for each."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    _log_runs(uri, "paths", N, D, L)
    return [_write_csv(folder / "runs.csv", N, D, L)], ["--tracking-uri", uri, "--experiment", "paths"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """20 noisy runs of Chinchilla's law, as RUNS.csv and as an MLflow experiment (logged once for the module)."""
    return _sources(tmp_path_factory.mktemp("paths"), *_runs())


def test_a_csv_and_the_store_give_one_recommendation(sources, capsys):
    from_csv, from_store = (_recommend(capsys, *source) for source in sources)
    assert from_csv["status"] == from_store["status"] == "ok"
    assert from_csv["n_runs"] == from_store["n_runs"] == 4 * 5
    assert from_csv["law"] == from_store["law"]
    assert from_csv["law_selection"]["chosen"] == from_store["law_selection"]["chosen"] == from_csv["law"]
    for key in ("params", "tokens", "loss", "params_low", "params_high", "loss_low", "loss_high"):
        assert from_csv[key] == pytest.approx(from_store[key], rel=AGREE), key
    assert from_csv["intervals"]["loss"] == from_store["intervals"]["loss"] == "calibrated"
    assert from_csv["intervals"]["meaning"] == from_store["intervals"]["meaning"]
    assert from_csv["backtest"]["sentence"] == from_store["backtest"]["sentence"]
    assert from_csv["data"]["used"] == from_store["data"]["used"] == "final losses"
    assert from_csv["loss_low"] < from_csv["loss"] < from_csv["loss_high"]
    assert from_csv["sentence"] == from_store["sentence"]


def test_a_named_law_form_and_the_bootstrap_are_used_by_both(sources, capsys):
    options = ("--law", "exponent_interaction", "--bootstrap", "50", "--seed", "3")
    from_csv, from_store = (_recommend(capsys, *source, *options) for source in sources)
    assert from_csv["law"] == from_store["law"] == "exponent_interaction"
    assert "law_selection" not in from_csv and "law_selection" not in from_store
    assert from_csv["bootstrap"] == from_store["bootstrap"] == 50
    for key in ("params", "loss", "params_low", "params_high", "loss_low", "loss_high", "alpha_low", "alpha_high"):
        assert from_csv[key] == pytest.approx(from_store[key], rel=AGREE), key


def test_a_degenerate_fit_is_refused_by_both(tmp_path, capsys):
    """Losses that do not depend on N (Chinchilla's D term alone): no run size from either, the same refusal."""
    N, D = (x.ravel() for x in np.meshgrid(np.geomspace(1e7, 1e9, 5), np.geomspace(1e9, 1e11, 5)))
    L = (1.8 + 400 / D**0.3) * np.exp(np.random.default_rng(0).normal(0, 0.005, N.size))
    csv, store = _sources(tmp_path, N, D, L)
    from_csv, from_store = _recommend(capsys, *csv), _recommend(capsys, *store)
    assert from_csv["status"] == from_store["status"] == "degenerate"
    assert "params" not in from_csv and "loss_low" not in from_csv
    assert from_csv["degenerate"] == from_store["degenerate"] and from_csv["degenerate"]
    assert from_csv["sentence"] == from_store["sentence"]
    assert from_csv["sentence"].startswith("No run size is recommended")
    capsys.readouterr()
    assert main(["recommend", *map(str, csv), "--flops", NEXT_FLOPS]) == 0
    assert "No run size is recommended" in capsys.readouterr().out


def test_the_csv_text_says_the_law_form_the_intervals_and_the_backtest(sources, capsys):
    capsys.readouterr()
    assert main(["recommend", *map(str, sources[0]), "--flops", NEXT_FLOPS]) == 0
    out = capsys.readouterr().out
    for line in ("law form: ", "intervals: loss_low..loss_high", "backtest: ", "Train next a model of"):
        assert line in out, line


def test_an_unknown_law_form_names_the_choices(sources, capsys):
    assert main(["recommend", *map(str, sources[0]), "--flops", NEXT_FLOPS, "--law", "kaplan"]) == 2
    assert "`law` must be 'auto' or one of ['chinchilla', 'data_constrained', 'exponent_interaction']" in (
        capsys.readouterr().err)


def test_recommend_from_the_store_names_only_what_it_wrote(sources, capsys):
    """Without --publish nothing is written, and the text names no artifact; with it, the summary run's artifact."""
    import mlflow

    _, store = sources
    assert main(["recommend", *map(str, store), "--flops", NEXT_FLOPS]) == 0
    out = capsys.readouterr().out
    assert "Details in `scaling_law/recommendation.json`" not in out and "Nothing was written to the store" in out
    client = mlflow.MlflowClient(store[1])
    exp = client.get_experiment_by_name(store[3])
    summary = "tags.`lightning_scaling.summary` = 'true'"
    assert client.search_runs([exp.experiment_id], filter_string=summary) == []
    assert main(["recommend", *map(str, store), "--flops", NEXT_FLOPS, "--publish"]) == 0
    out = capsys.readouterr().out
    assert "Details in `scaling_law/recommendation.json`" in out
    (published,) = client.search_runs([exp.experiment_id], filter_string=summary)
    assert [a.path for a in client.list_artifacts(published.info.run_id, "scaling_law")
            if a.path.endswith(".json")] == ["scaling_law/recommendation.json"]
