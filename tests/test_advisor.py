"""The closing hook against real MLflow: a sqlite store in a temp dir and an `mlflow server` on 127.0.0.1.

A set of runs is logged through the callbacks, including a FAILED one, a NaN one, a resumed one and one without
the schema; the hook's records, exclusions and recommendation are checked, and the recommendation's note, tags,
JSON and figures on the run and on the summary run. With the server stopped before the hook runs, training ends
normally with a warning.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import lightning.pytorch as pl
import mlflow
import pytest
from conftest import stop_at
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from servers import MlflowServer

from examples.tiny_gpt import ByteCorpusDataModule, TinyGPT
from lightning_scaling import ConfigurationError
from lightning_scaling.callbacks import PowerLR, ScalingLawAdvisor, ScalingTracker
from lightning_scaling.callbacks.advisor import ScalingLawAdvisorWarning
from lightning_scaling.cli import main

T = 32
EXPERIMENT = "advisor-test"
SECRET = "s3cr3t-password-not-to-be-logged"


@pytest.fixture(autouse=True)
def _single_threaded(single_threaded):
    yield


class NaNGPT(TinyGPT):
    """Logs a NaN validation loss, as a run whose training blew up would."""

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", float("nan"), on_epoch=True)


class Explode(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= 3:
            raise RuntimeError("simulated crash")


def train(uri, d_model, steps, *, callbacks=(), model_cls=TinyGPT, tracker=True, run_name=None, ckpt_path=None,
          ckpt_dir=None, artifacts=None):
    pl.seed_everything(0, verbose=False)
    model = model_cls(d_model=d_model, n_layer=1, n_head=2, seq_len=T, lr=3e-3)
    logger = MLFlowLogger(experiment_name=EXPERIMENT, tracking_uri=uri, run_name=run_name,
                          artifact_location=artifacts)
    cbs = ([ScalingTracker(log_every_n_steps=5)] if tracker else []) + list(callbacks)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, logger=logger, callbacks=cbs, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=ckpt_dir is not None, val_check_interval=steps,
        limit_val_batches=4, log_every_n_steps=5, deterministic=True,
        default_root_dir=str(ckpt_dir) if ckpt_dir else None,
    )
    dm = ByteCorpusDataModule(seq_len=T, batch_size=4, max_bytes=1_000_000, seed=0, val_windows=16)
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return logger.run_id, trainer


GOOD = [(16, 12), (16, 36), (24, 24), (32, 12), (32, 36), (48, 24)]


def log_scenario(uri, tmp_path, artifacts=None):
    """Six good runs, a FAILED one, a NaN one, one without the schema, and a resumed pair."""
    ids = {}
    for d, steps in GOOD:
        ids[f"good-{d}-{steps}"] = train(uri, d, steps, run_name=f"good-{d}-{steps}", artifacts=artifacts)[0]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(uri, 16, 20, callbacks=[Explode()], run_name="crashed", artifacts=artifacts)
    ids["nan"] = train(uri, 24, 12, model_cls=NaNGPT, run_name="nan", artifacts=artifacts)[0]
    ids["no-schema"] = train(uri, 24, 12, tracker=False, run_name="no-schema", artifacts=artifacts)[0]
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=10, save_top_k=-1)
    ids["interrupted"] = train(uri, 24, 40, callbacks=[ckpt, stop_at(10)], run_name="interrupted",
                               ckpt_dir=tmp_path, artifacts=artifacts)[0]
    path = next((tmp_path / "ckpt").glob("*.ckpt"))
    ids["resumed"] = train(uri, 24, 40, run_name="resumed", ckpt_path=str(path), artifacts=artifacts)[0]
    return ids


def check_scenario(uri, tmp_path, artifacts=None):
    ids = log_scenario(uri, tmp_path, artifacts)
    advisor = ScalingLawAdvisor(bootstrap=200, growth=4.0)
    power = PowerLR()
    final_id, trainer = train(uri, 40, 30, callbacks=[power, advisor], run_name="final", artifacts=artifacts)
    rec = advisor.recommendation
    assert rec is not None and rec["status"] == "ok", rec

    client = mlflow.MlflowClient(uri)
    used = {r["run_name"] for r in rec["runs"]["used"]}
    excluded = {e["run_name"]: e["reason"] for e in rec["runs"]["excluded"]}
    assert used == {f"good-{d}-{s}" for d, s in GOOD} | {"resumed", "final"}
    assert excluded["crashed"].startswith("status FAILED")
    assert "NaN, infinite or non-positive val_loss (nan)" in excluded["nan"]
    assert "no `lightning_scaling.schema` tag" in excluded["no-schema"]
    assert excluded["interrupted"] == f"superseded by run {ids['resumed']}, resumed from its checkpoint"
    assert client.get_run(ids["resumed"]).data.tags["lightning_scaling.resumed_from"] == ids["interrupted"]
    # the resumed run carries the whole history: tokens of 40 steps, not 30
    resumed = next(r for r in rec["runs"]["used"] if r["run_name"] == "resumed")
    assert resumed["tokens"] == 40 * 4 * T

    # the recommendation itself
    # the budget is 4x the largest compute in the law's own units, C = 6ND (measured FLOPs count more)
    largest = max(r["compute_6nd"] for r in rec["runs"]["used"])
    assert all(r["compute_6nd"] == pytest.approx(6 * r["params"] * r["tokens"], rel=0.05) for r in rec["runs"]["used"])
    assert max(r["flops"] for r in rec["runs"]["used"]) > largest
    assert rec["flops"] == pytest.approx(4 * largest)
    assert rec["budget_rule"] == f"4x the largest compute logged ({largest:.3g} FLOPs as 6ND)"
    assert 6 * rec["params"] * rec["tokens"] == pytest.approx(rec["flops"])
    assert rec["loss_low"] <= rec["loss"] <= rec["loss_high"]
    assert rec["params_low"] <= rec["params"] <= rec["params_high"]
    assert rec["architecture"]["d_model"] > 0 and rec["architecture"]["n_layer"] > 0
    assert "PowerLR" in rec["settings"] and "a=4" in rec["settings"]["PowerLR"]
    assert rec["sentence"].startswith("Train next a model of")

    # shown in the MLflow UI: on the run and on the summary run
    summary = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                                 filter_string="tags.`lightning_scaling.summary` = 'true'")
    assert len(summary) == 1 and summary[0].info.run_name == "scaling-law"
    for run_id in (final_id, summary[0].info.run_id):
        run = client.get_run(run_id)
        note = run.data.tags["mlflow.note.content"]
        assert "### Next run:" in note and "| predicted loss |" in note and rec["sentence"] in note
        assert f"Backtest: {rec['backtest']['sentence']}." in note and "Intervals: loss_low..loss_high" in note
        assert float(run.data.tags["lightning_scaling.next_params"]) == pytest.approx(rec["params"], rel=1e-3)
        assert float(run.data.tags["lightning_scaling.next_tokens"]) == pytest.approx(rec["tokens"], rel=1e-3)
        assert float(run.data.tags["lightning_scaling.next_flops"]) == pytest.approx(rec["flops"], rel=1e-3)
        assert float(run.data.tags["lightning_scaling.predicted_loss"]) == pytest.approx(rec["loss"], rel=1e-3)
        files = {a.path for a in client.list_artifacts(run_id, "scaling_law")}
        assert files == {"scaling_law/recommendation.json", "scaling_law/frontier.png", "scaling_law/isoflop.png"}
        local = client.download_artifacts(run_id, "scaling_law/recommendation.json", str(tmp_path / run_id))
        assert json.loads(Path(local).read_text())["params"] == pytest.approx(rec["params"])
    assert client.get_run(final_id).info.status == "FINISHED"  # the hook left the run's status alone
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    return ids, rec, final_id


# -- sqlite -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_closing_hook_on_sqlite(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, rec, _ = check_scenario(uri, tmp_path, artifacts=str(tmp_path / "artifacts"))

    # the command line reads the same records and makes the same recommendation offline
    capsys.readouterr()
    assert main(["runs", "--tracking-uri", uri, "--experiment", EXPERIMENT, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {r["run_name"] for r in listed["used"]} == {r["run_name"] for r in rec["runs"]["used"]}
    assert main(["runs", "--tracking-uri", uri, "--experiment", EXPERIMENT]) == 0
    text = capsys.readouterr().out
    assert "runs excluded:" in text and "crashed" in text and "status FAILED" in text
    assert main(["recommend", "--tracking-uri", uri, "--experiment", EXPERIMENT, "--growth", "4",
                 "--bootstrap", "200", "--format", "json"]) == 0
    offline = json.loads(capsys.readouterr().out)
    assert offline["params"] == pytest.approx(rec["params"], rel=1e-9)
    assert offline["loss_low"] == pytest.approx(rec["loss_low"], rel=1e-9)
    # the backtest reads the same runs; its last fold is the line in the note
    assert main(["backtest", "--tracking-uri", uri, "--experiment", EXPERIMENT, "--law", rec["law"],
                 "--format", "json"]) == 0
    backtest = json.loads(capsys.readouterr().out)
    assert backtest["sentence"] == rec["backtest"]["sentence"]
    assert backtest["held_out"] == sum(f["test_runs"] for f in backtest["folds"]) > 0


def test_too_few_runs_says_which_to_add(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    advisor = ScalingLawAdvisor(bootstrap=0)
    run_id, _ = train(uri, 16, 8, callbacks=[advisor], artifacts=str(tmp_path / "artifacts"))
    rec = advisor.recommendation
    assert rec["status"] == "insufficient_runs"
    assert rec["suggestions"] and all(6 * s["params"] * s["tokens"] == pytest.approx(s["flops"])
                                      for s in rec["suggestions"])
    note = mlflow.MlflowClient(uri).get_run(run_id).data.tags["mlflow.note.content"]
    assert "not enough runs yet" in note and "add runs such as N=" in note


def test_unknown_experiment_lists_the_ones_there(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment("exists")
    assert main(["runs", "--tracking-uri", uri, "--experiment", "nope"]) == 2
    assert "no MLflow experiment named 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"next_flops": -1.0}, r"`next_flops` must be a number > 0 or None, got -1.0"),
        ({"growth": 0}, r"`growth` must be a number > 0, got 0"),
        ({"bootstrap": 5}, r"`bootstrap` must be 0 or an integer >= 10, got 5"),
        ({"confidence": 1.5}, r"`confidence` must be in \(0, 1\), got 1.5"),
        ({"loss_key": ""}, r"`loss_key` must be a metric name, got ''"),
    ],
)
def test_configuration_errors(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        ScalingLawAdvisor(**kwargs)


# -- an HTTP tracking server ---------------------------------------------------------------------------------------
@pytest.fixture
def server(tmp_path, monkeypatch):
    # credentials from MLflow's usual variables; the server has no auth, so they are sent and ignored
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    srv = MlflowServer(tmp_path).start()
    yield srv
    srv.stop()


@pytest.mark.slow
def test_closing_hook_on_a_tracking_server(server, tmp_path):
    ids, rec, final_id = check_scenario(server.uri, tmp_path)
    client = mlflow.MlflowClient(server.uri)
    # credentials are never written into params, tags or artifacts
    for run_id in [*ids.values(), final_id]:
        run = client.get_run(run_id)
        blob = json.dumps([run.data.params, run.data.tags])
        assert SECRET not in blob and "MLFLOW_TRACKING_PASSWORD" not in blob
    local = client.download_artifacts(final_id, "scaling_law/recommendation.json", str(tmp_path / "dl"))
    assert SECRET not in Path(local).read_text()


class StopServer(Callback):
    def __init__(self, server):
        self.server = server

    def on_train_end(self, trainer, pl_module):
        self.server.stop()


class RestartServer(Callback):
    """Brings the server back after the hook, so that the logger's own finalize can close the run."""

    def __init__(self, server):
        self.server = server

    def on_fit_end(self, trainer, pl_module):
        self.server.start()


@pytest.mark.slow
def test_server_down_before_the_hook_only_warns(server, tmp_path):
    advisor = ScalingLawAdvisor(bootstrap=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_id, trainer = train(server.uri, 16, 8, callbacks=[StopServer(server), advisor, RestartServer(server)])
    assert trainer.state.finished and trainer.global_step == 8
    assert advisor.recommendation is None
    messages = [str(w.message) for w in caught if issubclass(w.category, ScalingLawAdvisorWarning)]
    assert messages and messages[0].startswith("ScalingLawAdvisor could not make a recommendation")
    assert mlflow.MlflowClient(server.uri).get_run(run_id).info.status == "FINISHED"


def test_recommendation_is_in_the_runs_unit_and_mixed_units_are_refused():
    from conftest import grid_runs

    from lightning_scaling.errors import ScalingDataError
    from lightning_scaling.planner import plan_next_run
    from lightning_scaling.runs.records import RunRecord, Selection

    N, D, L = grid_runs()
    records = [RunRecord(run_id=f"r{i}", run_name=f"mlp-{i}", schema="1", params=float(n), params_dense=float(n),
                         tokens=float(d), flops=6.0 * n * d, loss=float(x), config={"scaling/data_unit": "samples"})
               for i, (n, d, x) in enumerate(zip(N, D, L))]
    rec = plan_next_run(Selection(used=records, excluded=[]), n_bootstrap=0)
    assert rec["data_unit"] == "samples"
    assert " samples (" in rec["sentence"] and "samples per parameter" in rec["sentence"]
    assert " tokens" not in rec["sentence"]
    records[0].config["scaling/data_unit"] = "tokens"
    with pytest.raises(ScalingDataError, match=r"different units \(samples: mlp-1, .*tokens: mlp-0\)"):
        plan_next_run(Selection(used=records, excluded=[]), n_bootstrap=0)
