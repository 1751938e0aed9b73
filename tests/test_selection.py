"""Which runs the fit uses, on hand-built records: finished, failed, resumed, stale, complete but still RUNNING."""

from __future__ import annotations

import math

import pytest

from lightning_scaling.runs import RunRecord, select_runs

NOW = 1_800_000_000.0  # seconds since the epoch


def run(run_id, **kw):
    base = dict(run_id=run_id, run_name=run_id, status="FINISHED", schema="1", params=1e6, params_dense=1e6,
                tokens=2e7, flops=1.2e14, loss=3.0, best_loss=2.9, start_time=int((NOW - 7200) * 1000))
    return RunRecord(**{**base, **kw})


def reasons(selection):
    return {r.run_name: why for r, why in selection.excluded}


def test_selection_on_hand_built_records():
    records = [
        run("good"),
        run("failed-with-metrics", status="FAILED"),
        run("killed", status="KILLED"),
        run("interrupted"),
        run("resumed", resumed_from="interrupted"),
        run("stale", status="RUNNING", last_activity=int((NOW - 3600) * 1000)),
        run("training", status="RUNNING", last_activity=int((NOW - 60) * 1000)),
        run("hook-running", status="RUNNING", complete=True, last_activity=int((NOW - 5) * 1000)),
        run("current", status="RUNNING", last_activity=int((NOW - 1) * 1000)),
        run("nan", loss=math.nan),
        run("no-tokens", tokens=None),
        run("diverged", loss=6.0, best_loss=2.5),
        run("legacy", schema=None),
        run("scaling-law", is_summary=True),
    ]
    selection = select_runs(records, current_run_id="current", stale_after=1800, now=NOW)
    assert [r.run_name for r in selection.used] == ["good", "resumed", "hook-running", "current"]
    why = reasons(selection)
    assert why["failed-with-metrics"] == "status FAILED: only finished runs are fitted"
    assert why["killed"] == "status KILLED: only finished runs are fitted"
    assert why["interrupted"] == "superseded by run resumed, resumed from its checkpoint"
    assert why["stale"].startswith("stale: RUNNING with no new metric for 3600 s (more than 1800 s)")
    assert why["training"] == "status RUNNING: still training"
    assert why["nan"] == "NaN, infinite or non-positive val_loss (nan)"
    assert why["no-tokens"] == "missing metric(s) ['scaling/tokens']"
    assert why["diverged"].startswith("diverged: final val_loss 6 is more than 1.5x its best 2.5")
    assert why["legacy"].startswith("no `lightning_scaling.schema` tag")
    assert why["scaling-law"].startswith("summary run")
    assert len(selection.used) + len(selection.excluded) == len(records)  # nothing dropped silently


@pytest.mark.parametrize("idle, used", [(1799, False), (1801, False)])
def test_a_running_run_is_never_fitted_before_it_completes(idle, used):
    """Fresh or stale, a RUNNING run without the complete tag is left out; only the reason changes."""
    rec = run("r", status="RUNNING", last_activity=int((NOW - idle) * 1000))
    selection = select_runs([rec], stale_after=1800, now=NOW)
    assert bool(selection.used) is used
    assert reasons(selection)["r"].startswith("stale" if idle > 1800 else "status RUNNING")


def test_a_stale_run_resumed_under_its_run_id_comes_back():
    stale = run("r", status="RUNNING", last_activity=int((NOW - 7200) * 1000))
    assert not select_runs([stale], now=NOW).used
    resumed = run("r", status="FINISHED", last_activity=None)  # the same run id, resumed and finished
    assert select_runs([resumed], now=NOW).used
