"""The demo sweep (`examples/tiny_gpt/sweep.py`, what `make demo` runs): re-running continues the experiment.

A shrunk plan of three tiny runs goes through the sweep's real path (LightningCLI, the shipped YAML configs, MLflow on
sqlite, the closing hook after every run). An interrupted sweep resumes where it stopped, a failed run is trained
again and left out of the fit with its reason, and a re-run of a complete plan trains nothing and corrupts nothing.
"""

from __future__ import annotations

import mlflow
import pytest

from examples.tiny_gpt import sweep

pytestmark = pytest.mark.slow

PLAN = (  # 100 steps of 8 x 32 tokens: the shipped PowerLR warmup (20k tokens) must end before the decay
    sweep.Run("t-d16", 16, 1, 100),
    sweep.Run("t-d32", 32, 2, 100),
    sweep.Run("t-d48", 48, 3, 100),
)
SMALL = ["--data.init_args.max_bytes=400000", "--data.init_args.val_windows=8",
         "--trainer.enable_model_summary=false"]


@pytest.fixture
def tiny_sweep(tmp_path, monkeypatch, single_threaded):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sweep, "QUICK_OVERRIDES", sweep.QUICK_OVERRIDES + SMALL)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def run(plan, capsys):
        monkeypatch.setattr(sweep, "QUICK", plan)
        code = sweep.main(["--quick", "--tracking-uri", uri, "--experiment", "sweep-test"])
        return code, capsys.readouterr().out

    return uri, run


def _runs(uri):
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("sweep-test")
    return client, exp, client.search_runs([exp.experiment_id], max_results=1000)


def test_rerun_resumes_retrains_failed_and_never_duplicates(tiny_sweep, capsys):
    uri, run = tiny_sweep

    # an interrupted sweep: only the first two runs finished
    code, out = run(PLAN[:2], capsys)
    assert code == 0, out
    assert "0 of 2 planned runs already finished" in out
    assert "finished t-d16" in out and "finished t-d32" in out

    # a run that crashed: MLflow holds it as FAILED under a planned name
    client, exp, _ = _runs(uri)
    crashed = client.create_run(exp.experiment_id, run_name="t-d48", tags={"lightning_scaling.schema": "1"})
    client.set_terminated(crashed.info.run_id, status="FAILED")

    # the full plan: the two finished runs are skipped, the failed one is trained again
    code, out = run(PLAN, capsys)
    assert code == 0, out
    assert "2 of 3 planned runs already finished" in out
    assert "training t-d16" not in out and "training t-d32" not in out
    assert "finished t-d48" in out
    assert "Open it in the MLflow UI:" in out and f"mlflow ui --backend-store-uri {uri}" in out

    _, _, runs = _runs(uri)
    finished = [r.info.run_name for r in runs if r.info.status == "FINISHED" and
                r.data.tags.get("lightning_scaling.summary") != "true"]
    assert sorted(finished) == ["t-d16", "t-d32", "t-d48"]
    summaries = [r for r in runs if r.data.tags.get("lightning_scaling.summary") == "true"]
    assert len(summaries) == 1  # one summary run, updated after every run
    note = summaries[0].data.tags["mlflow.note.content"]
    assert "Runs used: 3" in note
    assert "status FAILED" in note  # the crashed run is left out, with its reason

    # the plan is complete: a re-run trains nothing and leaves the store as it was
    before = sorted((r.info.run_id, r.info.status) for r in runs)
    code, out = run(PLAN, capsys)
    assert code == 0, out
    assert "3 of 3 planned runs already finished" in out
    assert not [line for line in out.splitlines() if line.startswith("  training ")]
    _, _, after = _runs(uri)
    assert sorted((r.info.run_id, r.info.status) for r in after) == before
