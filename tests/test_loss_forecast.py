"""`LossForecast` in a real trainer against a sqlite MLflow store: the forecast logged at each validation from
the other runs' curves, a hopeless run warned about and stopped, and the store's treatment of a stopped run."""

from __future__ import annotations

import math
import warnings

import lightning.pytorch as pl
import mlflow
import numpy as np
import pytest
from lightning.pytorch.loggers import MLFlowLogger

from examples.tiny_gpt import ByteCorpusDataModule, TinyGPT
from lightning_scaling import ConfigurationError
from lightning_scaling.callbacks import LossForecast, LossForecastWarning, PowerLR, ScalingTracker
from lightning_scaling.callbacks.loss_forecast import FORECAST
from lightning_scaling.integrations import MLflowRunStore
from lightning_scaling.runs import LR, STOPPED_EARLY_TAG, RunRecord, select_runs

T = 32
POOL = [(16, 40), (24, 60), (32, 40), (32, 80), (48, 60), (16, 80)]


@pytest.fixture(autouse=True)
def _single_threaded(single_threaded):
    yield


def train(uri, d_model, steps, callbacks=(), lr_max=3e-3, name=None):
    pl.seed_everything(0, verbose=False)
    model = TinyGPT(d_model=d_model, n_layer=1, n_head=2, seq_len=T, lr=lr_max)
    logger = MLFlowLogger(experiment_name="forecast", tracking_uri=uri, run_name=name)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=logger,
                         callbacks=[ScalingTracker(log_every_n_steps=5),
                                    PowerLR(lr_max=lr_max, warmup_tokens=4 * T * 5, a=4.0), *callbacks],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         val_check_interval=10, limit_val_batches=2, log_every_n_steps=5, num_sanity_val_steps=0)
    dm = ByteCorpusDataModule(seq_len=T, batch_size=4, max_bytes=400_000, seed=0, val_windows=8)
    trainer.fit(model, dm)
    return logger.run_id, trainer


@pytest.mark.slow
def test_forecasts_are_logged_and_a_hopeless_run_is_stopped(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for d, steps in POOL:
        train(uri, d, steps, name=f"pool-d{d}-s{steps}")
    # a run like the others: forecasts logged from 10% of the run on, with an interval around them
    forecast = LossForecast()
    run_id, trainer = train(uri, 24, 80, [forecast], name="watched")
    client = mlflow.MlflowClient(uri)
    history = client.get_metric_history(run_id, FORECAST)
    low = {m.step: m.value for m in client.get_metric_history(run_id, f"{FORECAST}_low")}
    high = {m.step: m.value for m in client.get_metric_history(run_id, f"{FORECAST}_high")}
    assert [m.step for m in history] == [20, 30, 40, 50, 60, 70]  # from the second validation on
    assert all(low[m.step] <= m.value <= high[m.step] for m in history)
    assert forecast.forecaster.shape is not None and len(forecast.forecaster.pool_runs) == len(POOL)
    # six other runs are too few for an 80% conformal interval (it needs nine): the run's own bootstrap, widened
    assert forecast.last.method == "bootstrap of the run's own fit, widened to the errors of 6 other run(s)"
    final = client.get_metric_history(run_id, "val_loss")[-1].value
    assert abs(history[-1].value / final - 1) < 0.05
    assert forecast.stopped is None

    # a run with a learning rate far too small: above the law across runs, warned once, stopped
    hopeless = LossForecast(stop_if_hopeless=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_id, trainer = train(uri, 32, 80, [hopeless], lr_max=3e-6, name="hopeless")
    ours = [str(w.message) for w in caught if issubclass(w.category, LossForecastWarning)]
    hopeless_warnings = [m for m in ours if "the law predicts" in m]
    assert len(hopeless_warnings) == 1, ours
    assert "check the learning rate" in hopeless_warnings[0]
    assert hopeless.stopped and trainer.global_step < 80
    run = client.get_run(run_id)
    assert run.data.tags[STOPPED_EARLY_TAG] == hopeless.stopped
    store = MLflowRunStore(uri, "forecast")
    selection = store.select()
    why = {r.run_id: reason for r, reason in selection.excluded}
    assert why[run_id].startswith("stopped early: forecast")
    assert run_id not in {r.run_id for r in selection.used}
    assert run_id in {c.run for c in store.curves(selection)}  # its curve still counts


def test_a_stopped_run_is_left_out_of_the_law_with_its_reason():
    good = dict(status="FINISHED", schema="1", params=1e6, tokens=1e8, flops=6e14, loss=3.0)
    records = [RunRecord(run_id="a", **good), RunRecord(run_id="b", stopped_early="forecast 3.1 [3.0, 3.2]", **good)]
    selection = select_runs(records)
    assert [r.run_id for r in selection.used] == ["a"]
    assert selection.excluded[0][1].startswith("stopped early: forecast 3.1 [3.0, 3.2]")


def test_the_store_reads_curves_with_the_learning_rate_at_each_validation(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("curves")
    run = client.create_run(exp)
    for step in range(1, 101):
        client.log_metric(run.info.run_id, LR, 1e-3 * (1 - step / 200), step=step) if step % 10 == 1 else None
    for step in (20, 40, 60, 80, 100):
        client.log_metric(run.info.run_id, "val_loss", 4.0 - step / 100, step=step)
    store = MLflowRunStore(uri, "curves")
    record = RunRecord(run_id=run.info.run_id, start_time=1)
    from lightning_scaling.runs import Selection

    (curve,) = store.curves(Selection(used=[record], excluded=[]))
    assert curve.steps.tolist() == [20, 40, 60, 80, 100]
    # lr logged at 1, 11, ..., 91 and interpolated (linear here: exact); beyond the last logged step, held
    assert curve.lr[:4] == pytest.approx([1e-3 * (1 - s / 200) for s in (20, 40, 60, 80)])
    assert curve.lr[4] == pytest.approx(1e-3 * (1 - 91 / 200))
    assert np.all(np.isfinite(curve.loss))
    # for the checkpoints' correction: every logged learning rate too, the loss NaN where it was not measured
    (dense,) = store.curves(Selection(used=[record], excluded=[]), dense_lr=True)
    assert dense.steps.tolist() == sorted({*range(1, 101, 10), 20, 40, 60, 80, 100})
    assert dense.lr[dense.steps.tolist().index(51)] == pytest.approx(1e-3 * (1 - 51 / 200))
    assert np.isfinite(dense.loss).sum() == 5 and dense.loss[-1] == pytest.approx(3.0)


def test_the_stores_curves_carry_each_runs_n_and_tokens_but_a_stopped_runs_no_n(tmp_path):
    """The law across runs (`curves.stacking`) reads N and the tokens at each step from the store's curves; a run
    stopped early has no final loss of its budget, so it gives no N there."""
    from lightning_scaling.runs import Selection

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("curves")
    records = []
    for name in ("done", "stopped"):
        run = client.create_run(exp, run_name=name)
        for step in (10, 20, 30, 40):
            client.log_metric(run.info.run_id, LR, 1e-3, step=step)
            client.log_metric(run.info.run_id, "val_loss", 4.0 - step / 100, step=step)
        records.append(RunRecord(run_id=run.info.run_id, start_time=1, params=2e5, tokens=8e5))
    store = MLflowRunStore(uri, "curves")
    done, stopped = store.curves(Selection(used=records[:1], excluded=[(records[1], "stopped early: forecast")]))
    assert done.params == 2e5 and done.tokens.tolist() == [2e5, 4e5, 6e5, 8e5]  # 8e5 tokens over 40 steps
    assert stopped.params is None and stopped.final_tokens == 8e5


@pytest.mark.parametrize("kwargs, field", [
    ({"confidence": 1.0}, "confidence"), ({"stop_if_hopeless": "yes"}, "stop_if_hopeless"),
    ({"min_progress": 1.0}, "min_progress"), ({"max_pool_runs": -1}, "max_pool_runs"),
    ({"momentum": 1.0}, "momentum"), ({"loss_key": ""}, "loss_key"),
])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ConfigurationError, match=f"`{field}`"):
        LossForecast(**kwargs)


def test_no_store_means_the_runs_own_curve(tmp_path):
    """Without an MLflow logger the forecast comes from the run's curve alone (bootstrap interval)."""
    pl.seed_everything(0, verbose=False)
    forecast = LossForecast(min_progress=0.5)
    model = TinyGPT(d_model=16, n_layer=1, n_head=2, seq_len=T, lr=3e-3)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=60, logger=False,
                         callbacks=[ScalingTracker(log_every_n_steps=5), PowerLR(lr_max=3e-3), forecast],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         val_check_interval=5, limit_val_batches=2, num_sanity_val_steps=0,
                         default_root_dir=str(tmp_path))
    trainer.fit(model, ByteCorpusDataModule(seq_len=T, batch_size=4, max_bytes=200_000, seed=0, val_windows=8))
    assert forecast.last is not None and forecast.last.method.startswith("bootstrap")
    assert forecast.last.steps[-1] == 60
    assert all(math.isfinite(v) for v in forecast.last.final)
    assert len(forecast.seconds) == 6  # validations at 30, 35, ..., 55 (from 50% on, before the end)


def test_the_law_across_runs_judges_inside_its_range_when_degenerate():
    from lightning_scaling.callbacks.loss_forecast import _law_across
    from lightning_scaling.law import ChinchillaLaw

    law = ChinchillaLaw(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.37)
    grid = [(n, d) for n in (1e7, 3e7, 1e8) for d in (2e8, 6e8, 2e9)]
    rng = np.random.default_rng(0)
    records = [RunRecord(run_id=str(i), params=n, tokens=d, loss=float(law.loss(n, d)) * (1 + rng.normal(0, 0.01)))
               for i, (n, d) in enumerate(grid)]
    across = _law_across(records)
    assert not across.degenerate
    assert across.scatter == pytest.approx(0.01, abs=0.006)
    assert across.expected(3e7, 6e8) == pytest.approx(float(law.loss(3e7, 6e8)), rel=0.02)
    assert across.expected(5e8, 1e10) is not None  # a constrained law extrapolates
    degenerate = across.__class__(across.fit, across.N_range, across.D_range, across.scatter, True)
    assert degenerate.expected(5e8, 1e10) is None and degenerate.expected(3e7, 6e8) is not None
    assert _law_across(records[:4]) is None  # fewer than MIN_LAW_RUNS


def test_forecast_command_reads_the_pool_from_the_store(tmp_path, capsys):
    """Curves logged as the callbacks log them (the loss at each validation, `scaling/lr`) on finished runs of the
    schema join the file's pool."""
    from mlflow.entities import Metric

    from benchmarks.forecast import synthetic_runs
    from lightning_scaling.cli import main
    from lightning_scaling.runs import schema

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("pool")
    runs = list(synthetic_runs(4, n_runs=10).values())
    for (curve,) in runs[1:]:
        run = client.create_run(exp, tags={schema.SCHEMA_TAG: schema.SCHEMA_VERSION})
        rid = run.info.run_id
        metrics = [Metric(key, float(v), 0, int(s)) for s, lr, loss in zip(curve.steps, curve.lr, curve.loss)
                   for key, v in ((LR, lr), ("val_loss", loss))]
        metrics += [Metric(key, value, 0, int(curve.steps[-1]))
                    for key, value in ((schema.PARAMS_AVG, 1e6), (schema.TOKENS, 1e8), (schema.FLOPS, 6e14))]
        for i in range(0, len(metrics), 1000):  # MLflow's limit per batch
            client.log_batch(rid, metrics=metrics[i:i + 1000])
        client.set_terminated(rid, "FINISHED")
    (target,) = runs[0]
    cut = 0.3 * target.final_step
    lines = ["step,lr,loss"] + [f"{int(s)},{float(lr)!r},{'' if s > cut else repr(float(loss))}"
                                for s, lr, loss in zip(target.steps, target.lr, target.loss)]
    (tmp_path / "c.csv").write_text("\n".join(lines) + "\n")
    assert main(["forecast", str(tmp_path / "c.csv"), "--tracking-uri", uri, "--experiment", "pool",
                 "--format", "json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["fit"]["runs"] == 10 and out["method"] == "conformal over 9 other runs"
    assert abs(out["forecast"][-1]["loss"] / target.loss[-1] - 1) < 0.02
    assert main(["forecast", str(tmp_path / "c.csv"), "--tracking-uri", uri]) == 2
    assert "give both --tracking-uri and --experiment" in capsys.readouterr().err
