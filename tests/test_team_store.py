"""A team's run store: training processes started together against one MLflow server on PostgreSQL, and on the
sqlite default; every run and metric point arrives, every closing hook succeeds, one summary run over all runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import mlflow
import pytest
from mlflow.entities import ViewType
from servers import REPO, env, mlflow_on, postgres, postgres_missing

from lightning_scaling.cli import main
from lightning_scaling.runs import N_RUNS_TAG, SUMMARY_TAG, TOKENS

SIZES = [(16, 12), (16, 36), (24, 24), (32, 12), (32, 36), (48, 24), (24, 12), (48, 36)]
T, BATCH, LOG_EVERY = 32, 4, 5


def launch(uri: str, experiment: str, runs, tmp) -> list[dict]:
    """Start one training process per (d_model, steps), all opening their runs at the same moment (a barrier once
    each has imported and built its model); their reports."""
    barrier = tmp / f"barrier-{experiment}"
    procs = []
    for i, (d, steps) in enumerate(runs):
        out = tmp / f"r{i}.json"
        cmd = [sys.executable, str(REPO / "tests" / "team_script.py"), "--uri", uri, "--experiment", experiment,
               "--d-model", str(d), "--steps", str(steps), "--name", f"r{i}-d{d}-s{steps}", "--out", str(out),
               "--barrier", str(barrier), "--members", str(len(runs))]
        procs.append((subprocess.Popen(cmd, cwd=tmp, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True), out))
    reports = []
    for proc, out in procs:
        log, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, log[-4000:]
        reports.append(json.loads(out.read_text()))
    for rep in reports:
        print("team member", rep["run_id"], {k: round(v, 1) for k, v in rep["seconds"].items()})
    return reports


def check_team(uri: str, experiment: str, runs, reports) -> None:
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert [e.name for e in client.search_experiments(filter_string=f"name = '{experiment}'")] == [experiment]
    everything = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    training = [r for r in everything if r.data.tags.get(SUMMARY_TAG) != "true"]
    summaries = [r for r in everything if r.data.tags.get(SUMMARY_TAG) == "true"
                 and r.info.lifecycle_stage == "active"]
    # every run arrived, finished, with every metric point
    assert sorted(r.info.run_id for r in training) == sorted(rep["run_id"] for rep in reports)
    assert all(r.info.status == "FINISHED" for r in training)
    by_name = {r.info.run_name: r for r in training}
    for i, (d, steps) in enumerate(runs):
        run = by_name[f"r{i}-d{d}-s{steps}"]
        history = client.get_metric_history(run.info.run_id, TOKENS)
        expected_steps = sorted({s for s in range(LOG_EVERY, steps + 1, LOG_EVERY)} | {steps})
        assert [m.step for m in history] == expected_steps, (run.info.run_name, [m.step for m in history])
        assert history[-1].value == steps * BATCH * T
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 1
    # every closing hook succeeded (one that ran while fewer runs had finished may find too few to fit: that is
    # an answer, not a failure)
    problems = [(rep["run_id"], rep["status"], rep["warnings"]) for rep in reports
                if rep["status"] not in ("ok", "degenerate", "insufficient_runs") or rep["warnings"]]
    assert not problems, "\n".join(map(str, problems))
    # exactly one summary run, holding the recommendation over all of them
    assert len(summaries) == 1, [(r.info.run_id, r.info.start_time) for r in summaries]
    summary = summaries[0]
    assert summary.data.tags[N_RUNS_TAG] == str(len(runs))
    assert max(rep["n_runs"] for rep in reports) == len(runs)


@pytest.mark.slow
def test_eight_processes_on_one_postgresql_backed_server(tmp_path, capsys):
    missing = postgres_missing()
    if missing:
        pytest.skip(missing)
    t0 = time.perf_counter()
    with postgres() as database, mlflow_on(tmp_path, database, workers=2) as uri:
        t1 = time.perf_counter()
        reports = launch(uri, "team", SIZES, tmp_path)
        t2 = time.perf_counter()
        check_team(uri, "team", SIZES, reports)
        t3 = time.perf_counter()
        with capsys.disabled():
            print(capsys.readouterr().out)
            print(f"servers {t1 - t0:.1f} s, processes {t2 - t1:.1f} s, checks {t3 - t2:.1f} s")
        # the commands read the same store
        assert main(["runs", "--tracking-uri", uri, "--experiment", "team", "--format", "json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert len(listed["used"]) == len(SIZES)
        assert main(["recommend", "--tracking-uri", uri, "--experiment", "team", "--bootstrap", "50",
                     "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out)["n_runs"] == len(SIZES)
        assert main(["backtest", "--tracking-uri", uri, "--experiment", "team", "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out)["held_out"] > 0


@pytest.mark.slow
def test_four_processes_on_the_sqlite_default(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).search_experiments()  # create the schema once (MLflow's own migration is not concurrent)
    runs = SIZES[:4]
    reports = launch(uri, "solo", runs, tmp_path)
    check_team(uri, "solo", runs, reports)


class RacingClient:
    """A client whose first `fails` tag writes fail as MLflow's database store does when another process inserted
    the same new tag a moment before."""

    def __init__(self, fails: int, message: str = "(sqlite3.IntegrityError) UNIQUE constraint failed: tags.key"):
        self.fails, self.message, self.calls = fails, message, []

    def set_tag(self, run_id, key, value):
        from mlflow.exceptions import MlflowException

        self.calls.append((run_id, key, value))
        if len(self.calls) <= self.fails:
            raise MlflowException(self.message)


def test_a_tag_written_by_two_hooks_at_once_is_written_again():
    from lightning_scaling.integrations import MLflowRunStore
    from lightning_scaling.integrations.mlflow_store import TAG_WRITE_ATTEMPTS

    store = MLflowRunStore.__new__(MLflowRunStore)
    store.client = RacingClient(fails=2)
    store.set_tag("r", N_RUNS_TAG, "8")
    assert store.client.calls == [("r", N_RUNS_TAG, "8")] * 3
    # PostgreSQL's wording too; any other error at once; a conflict that never clears after the last attempt
    store.client = RacingClient(fails=1, message='duplicate key value violates unique constraint "tag_pk"')
    store.set_tag("r", "k", "v")
    assert len(store.client.calls) == 2
    from mlflow.exceptions import MlflowException

    store.client = RacingClient(fails=1, message="RESOURCE_DOES_NOT_EXIST: run r")
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        store.set_tag("r", "k", "v")
    assert len(store.client.calls) == 1
    store.client = RacingClient(fails=TAG_WRITE_ATTEMPTS)
    with pytest.raises(MlflowException, match="UNIQUE"):
        store.set_tag("r", "k", "v")
    assert len(store.client.calls) == TAG_WRITE_ATTEMPTS


def test_a_hook_stops_refitting_once_the_summary_covers_every_usable_run(monkeypatch):
    """Runs that end together: this hook fitted 3 runs, 5 are usable now, and another hook has already published
    over 5: no refit (a refit in every hook multiplied the work of 8 runs ending together)."""
    from lightning_scaling.callbacks import ScalingLawAdvisor
    from lightning_scaling.callbacks import advisor as advisor_module
    from lightning_scaling.runs import RunRecord, Selection

    def selection(n):
        return Selection(used=[RunRecord(run_id=str(i)) for i in range(n)], excluded=[])

    class Store:
        def __init__(self, held):
            self.held, self.selects, self.published = held, 0, []

        def select(self, current_run_id=None):
            self.selects += 1
            return selection(3 if self.selects == 1 else 5)

        def publish_everywhere(self, rec, run_ids):
            self.published.append(rec["n_runs"])

        def more_usable_since(self, selection, since, current_run_id=None):
            return True

        def summary_n_runs(self):
            return self.held

    monkeypatch.setattr(advisor_module, "plan_next_run", lambda sel, **kw: {"n_runs": len(sel.used)})
    covered = Store(held=5)
    ScalingLawAdvisor(bootstrap=0).advise(covered, "me")
    assert covered.published == [3]
    behind = Store(held=3)  # the summary holds fewer than are usable: refit, up to REFITS times
    ScalingLawAdvisor(bootstrap=0).advise(behind, "me")
    assert behind.published == [3] + [5] * advisor_module.REFITS


def test_a_later_fit_over_fewer_runs_does_not_overwrite_the_summary(tmp_path):
    """Two closing hooks racing: the one that fitted fewer runs publishes last; the summary keeps the larger fit
    (unless forced, as `recommend --publish` is)."""
    import mlflow

    from lightning_scaling.integrations import MLflowRunStore
    from lightning_scaling.runs import N_RUNS_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment("race")
    store = MLflowRunStore(uri, experiment_name="race")

    def rec(n):
        return {"status": "insufficient_runs", "sentence": f"fitted on {n} runs", "n_runs": n,
                "runs": {"used": [{"run_id": str(i)} for i in range(n)], "excluded": []}}

    assert store.publish_everywhere(rec(10)) is True
    assert store.publish_everywhere(rec(5)) is False
    summary = store.summary_run()
    assert summary.data.tags[N_RUNS_TAG] == "10" and "fitted on 10 runs" in summary.data.tags["mlflow.note.content"]
    assert store.publish_everywhere(rec(5), force=True) is True
    summary = store.summary_run()
    assert summary.data.tags[N_RUNS_TAG] == "5" and "fitted on 5 runs" in summary.data.tags["mlflow.note.content"]
