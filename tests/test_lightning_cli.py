"""YAML through LightningCLI: the callbacks as `trainer.callbacks` entries, bad values rejected naming the field,
and the resolved config logged to the MLflow run by `MLflowSaveConfigCallback`."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import yaml

from lightning_scaling.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _single_threaded(single_threaded):
    yield


def tiny_config(tmp_path: Path, **pruning) -> Path:
    """The shipped sparse example config, shrunk to a few steps and pointed at a temporary store."""
    config = yaml.safe_load((ROOT / "examples" / "tiny_gpt" / "config_sparse.yaml").read_text())
    config["trainer"].update(max_steps=4, val_check_interval=4, limit_val_batches=2, enable_progress_bar=False,
                             enable_model_summary=False)
    config["trainer"]["logger"]["init_args"].update(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                                    experiment_name="cli", run_name="cli-run")
    config["model"]["init_args"].update(d_model=32, n_head=2, seq_len=16)
    config["data"]["init_args"].update(seq_len=16, batch_size=2, val_windows=4, max_bytes=300_000)
    for cb in config["trainer"]["callbacks"]:
        if cb["class_path"].endswith("GradualPruning"):
            cb["init_args"].update(pruning)
        if cb["class_path"].endswith("ScalingLawAdvisor"):
            cb["init_args"]["bootstrap"] = 0
        if cb["class_path"].endswith("PowerLR"):
            cb["init_args"]["warmup_tokens"] = 0
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_shipped_configs_start_with_the_command_that_runs_them():
    for name in ("config.yaml", "config_sparse.yaml"):
        first = (ROOT / "examples" / "tiny_gpt" / name).read_text().splitlines()[0]
        assert first == f"# lightning-scaling train --config examples/tiny_gpt/{name}"
        text = (ROOT / "examples" / "tiny_gpt" / name).read_text()
        assert "tracking_uri: sqlite:///mlflow.db" in text


def test_train_from_yaml_logs_the_resolved_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(tiny_config(tmp_path))]) == 0
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cli")
    run = client.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'cli-run'")[0]
    assert run.info.status == "FINISHED"
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    logged = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text())
    classes = [cb["class_path"] for cb in logged["trainer"]["callbacks"]]
    assert "lightning_scaling.callbacks.GradualPruning" in classes and "lightning_scaling.callbacks.MuP" in classes
    assert run.data.tags["lightning_scaling.schema"] == "1"
    assert run.data.params["scaling/pruning_final_sparsity"] == "0.5"


def exit_code(argv) -> int:
    """The exit status of the command, whether it returns it or jsonargparse exits the parser."""
    try:
        return main(argv)
    except SystemExit as err:
        return err.code


@pytest.mark.parametrize(
    "pruning, message",
    [
        ({"final_sparsity": -0.2}, ["final_sparsity", "-0.2"]),
        ({"start_fraction": 0.9}, ["`start_fraction` must be < `end_fraction`, got start_fraction=0.9"]),
        ({"finale_sparsity": 0.5}, ["finale_sparsity", "not accepted"]),
        ({"scope": "row"}, ["scope", "row"]),
    ],
)
def test_bad_values_are_rejected_naming_the_field(tmp_path, capsys, pruning, message):
    assert exit_code(["train", "--config", str(tiny_config(tmp_path, **pruning))]) == 2
    err = capsys.readouterr().err
    for part in message:
        assert part in err, err


def test_unknown_schedule_name_is_rejected(tmp_path, capsys):
    path = tiny_config(tmp_path)
    path.write_text(path.read_text().replace("decay: exponential", "decay: cosine"))
    assert exit_code(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "decay" in err and "exponential" in err and "cosine" in err


def test_train_a_pytorch_lightning_model_from_yaml(tmp_path, monkeypatch):
    """The same callback class_paths under the other namespace's LightningCLI, picked from the model's class."""
    pytest.importorskip("pytorch_lightning")
    monkeypatch.chdir(tmp_path)
    config = {
        "trainer": {
            "accelerator": "cpu", "max_steps": 4, "log_every_n_steps": 2, "enable_progress_bar": False,
            "enable_model_summary": False, "enable_checkpointing": False,
            "logger": {"class_path": "pytorch_lightning.loggers.MLFlowLogger",
                       "init_args": {"experiment_name": "pl-cli", "run_name": "pl-run",
                                     "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}},
            "callbacks": [{"class_path": "lightning_scaling.callbacks.PowerLR"},
                          {"class_path": "lightning_scaling.callbacks.GradualPruning",
                           "init_args": {"final_sparsity": 0.5, "update_every": 1}},
                          {"class_path": "lightning_scaling.callbacks.ScalingTracker"}],
        },
        "model": {"class_path": "compat_models.MLPRegression", "init_args": {"width": 16}},
    }
    path = tmp_path / "pl.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path)]) == 0
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("pl-cli").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.data.params["scaling/data_unit"] == "samples"
    assert run.data.metrics["scaling/tokens"] == 4 * 16
    assert run.data.metrics["scaling/sparsity"] > 0.4


def test_model_namespace_is_read_from_the_config_and_the_command_line(tmp_path):
    from lightning_scaling.integrations import model_namespace

    pytest.importorskip("pytorch_lightning")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"class_path": "examples.tiny_gpt.TinyGPT"}}))
    assert model_namespace(["--config", str(path)]) == "lightning.pytorch"
    assert model_namespace(["--config", str(path), "--model.class_path=compat_models.MLPRegression"]) == \
        "pytorch_lightning"
    assert model_namespace(["--trainer.max_steps=3"]) is None
