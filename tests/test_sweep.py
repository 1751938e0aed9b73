"""The demo sweep (`examples/tiny_gpt/sweep.py`, what `make demo` runs): re-running continues the experiment.

The planned sweep (the default) resumes an interrupted stage and ends when its budget is spent. For the fixed list
(`--fixed`), a shrunk plan of three tiny runs goes through the sweep's real path (LightningCLI, the shipped YAML
configs, MLflow on sqlite, the closing hook after every run). An interrupted sweep resumes where it stopped, a failed
run is trained again and left out of the fit with its reason, and a re-run of a complete plan trains nothing and
corrupts nothing.
"""

from __future__ import annotations

import dataclasses

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
        code = sweep.main(["--quick", "--fixed", "--tracking-uri", uri, "--experiment", "sweep-test"])
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


def test_the_planned_sweep_resumes_its_first_stage_and_stops_when_the_budget_is_spent(tmp_path, monkeypatch,
                                                                                      capsys, single_threaded):
    """`make demo`'s path: the planner's first stage (one isoFLOP group of three widths and its sparse twin, shrunk
    to runs of 100-700 steps), interrupted by the time cap after one run, then continued by a re-run, which plans
    the rest of the same stage rather than a new one; a third call finds the budget spent and trains nothing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sweep, "QUICK_OVERRIDES", sweep.QUICK_OVERRIDES + SMALL)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tiny = sweep.Plan(target=1e12, budget=4.2e10, first_share=0.95, first_groups=1, group_size=3, min_warmups=1.3,
                      time_cap_s=0.0)

    def run(cap):
        monkeypatch.setitem(sweep.PLANS, "quick", dataclasses.replace(tiny, time_cap_s=cap))
        code = sweep.main(["--quick", "--tracking-uri", uri, "--experiment", "sweep-test"])
        out = capsys.readouterr().out
        return code, out, [line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("  training ")]

    code, out, first = run(0.0)
    assert code == 0, out
    assert out.count("Stage 1: train 3 runs in 1 isoFLOP group") == 1 and len(first) == 1
    assert "time cap (0 s) is reached: re-run to continue the plan" in out

    code, out, rest = run(1e9)
    assert code == 0, out
    assert "1 runs already finished" in out and "Stage 1: train 2 runs" in out and "Stage 2" not in out
    assert first[0] not in rest and len(rest) == 3 and rest[-1] == "s1-sparse"
    assert "The budget is spent" in out and "Open it in the MLflow UI:" in out

    client, exp, runs = _runs(uri)
    training = [r for r in runs if r.data.tags.get("lightning_scaling.summary") != "true"]
    assert sorted(r.info.run_name for r in training) == sorted(first + rest)
    sparse = next(r for r in training if r.info.run_name == "s1-sparse")
    dense = [r.data.metrics["scaling/flops_analytic"] for r in training if r is not sparse]
    assert sparse.data.metrics["scaling/sparsity"] > 0.2
    # the sparse twin spends about its group's compute at its average non-zero count (C = 6 N_avg D)
    assert min(dense) / 1.25 < 6 * sparse.data.metrics["scaling/params_avg"] * sparse.data.metrics[
        "scaling/tokens"] < max(dense) * 1.25

    # the closing hook plans as the sweep does (its options and the family's widths): its plan is done too
    from lightning_scaling.integrations.mlflow_store import MLflowRunStore

    plan = MLflowRunStore(uri, experiment_name="sweep-test").latest_recommendation()["plan"]
    assert plan["done"] and plan["stage"] == 2, plan["sentence"]

    before = sorted((r.info.run_id, r.info.status) for r in runs)
    code, out, again = run(1e9)
    assert code == 0 and again == [] and "The budget is spent" in out
    assert sorted((r.info.run_id, r.info.status) for r in _runs(uri)[2]) == before
