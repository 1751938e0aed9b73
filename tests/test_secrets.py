"""Credentials never leave the process in anything this package writes: a password inside a tracking URI given in
YAML (`http://user:secret@host`) and MLflow's credential variables (`MLFLOW_TRACKING_USERNAME` / `_PASSWORD` /
`_TOKEN`) appear in no param, tag, note, artifact (the saved `config.yaml` included), figure, warning or output;
YAML is loaded safely; nothing read back from a run is unpickled."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import MlflowServer
from test_lightning_cli import exit_code, tiny_config

from lightning_scaling.callbacks import ScalingLawAdvisor
from lightning_scaling.callbacks.advisor import ScalingLawAdvisorWarning
from lightning_scaling.runs import redact
from lightning_scaling.runs.secrets import SECRET_VARIABLES

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_scaling"
URI_PASSWORD = "uri-pass-9f3k2"
ENV_SECRETS = {"MLFLOW_TRACKING_USERNAME": "alice-7qx", "MLFLOW_TRACKING_PASSWORD": "env-pass-4kd8",
               "MLFLOW_TRACKING_TOKEN": "env-token-2mz5"}
SECRETS = [URI_PASSWORD, *ENV_SECRETS.values()]

secret_text = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="-_.~!$"),
                      min_size=3, max_size=24)


@settings(max_examples=200, deadline=None)
@given(user=secret_text, password=secret_text, host=st.from_regex(r"[a-z][a-z0-9.\-]{0,20}", fullmatch=True),
       scheme=st.sampled_from(["http", "https", "postgresql", "postgresql+psycopg2", "mysql"]),
       before=st.text(max_size=30), after=st.sampled_from(["", "/", ":5000/api/2.0/x", "/mlflow?x=1"]))
def test_a_password_in_a_uri_never_survives(user, password, host, scheme, before, after):
    text = f"{before} {scheme}://{user}:{password}@{host}{after}"
    out = redact(text, env={})
    assert f":{password}@" not in out and f"{scheme}://{user}:***@{host}{after}" in out


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(SECRET_VARIABLES), value=secret_text, around=st.text(max_size=40))
def test_credential_variables_never_survive(name, value, around):
    out = redact(f"{around}{value}{around}", env={name: value})
    assert value not in out


def test_query_credentials_and_short_values():
    assert redact("https://h/x?token=abc&y=2", env={}) == "https://h/x?token=***&y=2"
    assert redact("a b", env={"MLFLOW_TRACKING_PASSWORD": "a"}) == "a b"  # too short to be told from words


def test_the_hook_warning_with_an_unreachable_credentialed_server_is_redacted(monkeypatch):
    """MLflow's own error message quotes the request URL with the user information in it."""
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"http://bob:{URI_PASSWORD}@127.0.0.1:9"  # the discard port: nothing listens
    client = mlflow.MlflowClient(uri)
    logger = SimpleNamespace(run_id="r1", experiment_id="1", experiment=client)
    trainer = SimpleNamespace(is_global_zero=True, loggers=[logger], callbacks=[])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ScalingLawAdvisor(bootstrap=0).on_fit_end(trainer, None)
    messages = [str(w.message) for w in caught if issubclass(w.category, ScalingLawAdvisorWarning)]
    assert messages and "127.0.0.1" in messages[0]  # the message still says where
    assert not any(s in m for m in messages for s in SECRETS), messages


def test_yaml_is_loaded_safely(tmp_path, capsys):
    """A config that would run code when loaded unsafely is refused, and the code does not run."""
    marker = tmp_path / "pwned"
    path = tiny_config(tmp_path)
    config = path.read_text() + f"\nextra: !!python/object/apply:os.system ['touch {marker}']\n"
    path.write_text(config)
    assert exit_code(["train", "--config", str(path)]) == 2
    assert not marker.exists()


def test_nothing_read_back_from_a_run_is_unpickled():
    """The run store reads JSON and numbers only: no pickle, no unsafe YAML, no torch.load on what it downloads."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        for pattern in (r"\bpickle\b", r"\bcloudpickle\b", r"\bdill\b", r"yaml\.load\(", r"yaml\.unsafe_load",
                        r"Loader=yaml\.(Unsafe)?Loader", r"\bmarshal\b"):
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(PACKAGE)}: {pattern}")
    store = (PACKAGE / "integrations" / "mlflow_store.py").read_text()
    assert "torch" not in store
    assert offenders == []


@pytest.mark.slow
def test_credentials_appear_nowhere_a_run_is_written(tmp_path, monkeypatch, capfd):
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    server = MlflowServer(tmp_path).start()
    try:
        credentialed = server.uri.replace("http://", f"http://bob:{URI_PASSWORD}@")
        path = tiny_config(tmp_path)
        config = yaml.safe_load(path.read_text())
        config["trainer"]["logger"]["init_args"]["tracking_uri"] = credentialed
        path.write_text(yaml.safe_dump(config))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert exit_code(["train", "--config", str(path)]) == 0
        output = capfd.readouterr()
        client = mlflow.MlflowClient(server.uri)
        exp = client.get_experiment_by_name("cli")
        runs = client.search_runs([exp.experiment_id])
        assert runs, "no run logged"
        blobs = [output.out, output.err, *(str(w.message) for w in caught)]
        for run in runs:
            # MLflow itself records the tracking username as the run's user (`mlflow.user`): attribution, not a
            # secret, and not written by this package; every other tag, and the password and token everywhere, hold
            tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.user"}
            assert not any(s in run.data.tags.get("mlflow.user", "") for s in SECRETS if s != ENV_SECRETS[
                "MLFLOW_TRACKING_USERNAME"])
            blobs.append(json.dumps([run.data.params, tags, run.data.metrics]))
            local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
            files = [p for p in local.rglob("*") if p.is_file()]
            blobs.extend(p.read_bytes().decode("latin-1") for p in files)
            if run.data.tags.get("mlflow.runName") == "cli-run":
                saved = next(p for p in files if p.name == "config.yaml")
                logger_uri = yaml.safe_load(saved.read_text())["trainer"]["logger"]["init_args"]["tracking_uri"]
                assert logger_uri == credentialed.replace(URI_PASSWORD, "***")  # scrubbed, still readable
        leaks = [(s, b[max(0, b.find(s) - 80):b.find(s) + 40]) for b in blobs for s in SECRETS if s in b]
        assert leaks == []
    finally:
        server.stop()


# Named here, not read from SECRET_VARIABLES: a variable dropped from that tuple must fail this test.
EVERY_SECRET_VARIABLE = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                         "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_ACCESS_KEY",
                         "AZURE_STORAGE_CONNECTION_STRING", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_SECRET")


@pytest.mark.parametrize("name", EVERY_SECRET_VARIABLE)
def test_each_credential_variable_is_scrubbed(name):
    assert name in SECRET_VARIABLES
    assert redact("sent s3cr3t-value-9 to the server", env={name: "s3cr3t-value-9"}) == "sent *** to the server"
