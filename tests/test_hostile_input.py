"""Hostile and malformed input, generated (hypothesis): CSV rows, YAML values for the callbacks, and run records as
MLflow returns them (metrics missing, NaN, infinite, strings in tags and params, absurd magnitudes, duplicated
names). Only the package's own errors come out, naming the line, field or run, never a traceback from inside numpy,
scipy or MLflow, and no recommendation is built on a bad record."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lightning_scaling.callbacks import GradualPruning, PowerLR, ScalingLawAdvisor, ScalingTracker
from lightning_scaling.cli import main
from lightning_scaling.errors import ConfigurationError, LightningScalingError
from lightning_scaling.integrations import MLflowRunStore
from lightning_scaling.law import CHINCHILLA_PAPER_LAW as LAW
from lightning_scaling.planner.next_run import plan_next_run
from lightning_scaling.runs import PLAUSIBLE, read_runs_csv, schema, select_runs
from lightning_scaling.runs.records import FLOPS_RATIO, USABLE_STATUSES

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])
SLOWER = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])

# -- values ---------------------------------------------------------------------------------------------------------
ABSURD = st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "-1", "0", "1e30", "1", "1e-300", "", " ", "abc",
                          "1,5", "0x10", "None", "true", "\u00a0", "1e15.5"])


def good_run(draw) -> tuple[float, float, float]:
    """(N, D, L) of a plausible run: sizes and budgets where small models train, the loss from Chinchilla's law."""
    N = 10 ** draw(st.floats(4.0, 9.0))
    D = 10 ** draw(st.floats(6.0, 11.0))
    return N, D, float(LAW.loss(N, D))


@st.composite
def csv_tables(draw):
    n = draw(st.integers(0, 12))
    columns = ["params", "tokens", "loss"] + draw(st.lists(st.sampled_from(["flops", "run_id", "params_avg"]),
                                                            unique=True, max_size=3))
    columns = draw(st.permutations(columns))
    ids = draw(st.lists(st.sampled_from(["a", "b", "a,b", "\"q\"", "dup"]), min_size=n, max_size=n))
    rows = []
    for i in range(n):
        N, D, L = good_run(draw)
        values = {"params": repr(N), "tokens": repr(D), "loss": repr(L), "flops": repr(6 * N * D),
                  "params_avg": repr(N), "run_id": ids[i]}
        for column in draw(st.lists(st.sampled_from(columns), max_size=2)):  # corrupt up to two cells
            values[column] = draw(ABSURD)
        rows.append({c: values[c] for c in columns})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


NAMED = re.compile(r"line \d+|no runs|column|need at least|too few runs")


def check_table(table) -> None:
    """A table that was accepted holds only finite, positive, plausible counts."""
    for name, values in (("params", table.dense_params), ("tokens", table.D), ("loss", table.loss)):
        assert np.all(np.isfinite(values)) and np.all(values > 0), name
        if name in PLAUSIBLE:
            lo, hi = PLAUSIBLE[name]
            assert np.all((values >= lo) & (values <= hi)), name


@FAST
@given(text=csv_tables())
def test_csv_rows_give_named_errors_or_clean_runs(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("csv") / "runs.csv"
    path.write_text(text)
    try:
        table = read_runs_csv(path)
    except LightningScalingError as err:
        assert NAMED.search(str(err)), str(err)
        return
    check_table(table)


@SLOWER
@given(text=csv_tables())
def test_recommend_on_hostile_csv_answers_or_names_the_problem(tmp_path_factory, text, capsys):
    path = tmp_path_factory.mktemp("csv") / "runs.csv"
    path.write_text(text)
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["recommend", str(path), "--flops", "1e20", "--bootstrap", "0", "--format", "json"])
    out, err = capsys.readouterr()
    if code == 0:  # `recommend RUNS.csv` prints the fit and its allocation (the CSV path has no `status`)
        rec = json.loads(out)
        assert rec["n_runs"] >= 5 and rec["sentence"]
        assert rec["degenerate"] or (math.isfinite(rec["params"]) and rec["params"] > 0
                                     and math.isfinite(rec["loss"])), rec
    else:
        assert err.startswith("lightning-scaling recommend: error: ") and "Traceback" not in err, err
        assert NAMED.search(err), err


# -- YAML values for the callbacks ----------------------------------------------------------------------------------
yaml_values = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1e-3", "nan", ".inf", "-.inf", "0x1F", "1_000", "yes", "off", "~", "exponential", "linear",
                     "layer", "global", "total", "non_embedding", "", "{}", "[1]"]),
    st.text(max_size=10), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                max_size=2),
)
CALLBACK_FIELDS = {
    ScalingLawAdvisor: ["next_flops", "growth", "loss_key", "bootstrap", "confidence", "stale_after"],
    PowerLR: ["a", "b", "lr_max", "warmup_tokens", "total_tokens", "decay_fraction", "decay", "batch_size"],
    GradualPruning: ["final_sparsity", "start_fraction", "end_fraction", "scope", "update_every"],
    ScalingTracker: ["log_every_n_steps", "params_basis"],
}


@FAST
@given(cls=st.sampled_from(list(CALLBACK_FIELDS)), data=st.data())
def test_yaml_values_are_accepted_or_refused_naming_the_field(cls, data):
    field = data.draw(st.sampled_from(CALLBACK_FIELDS[cls]))
    value = data.draw(yaml_values)
    # through YAML, as a config file gives it (YAML 1.1 reads "1e-3" as a string, ".inf" as a float)
    loaded = yaml.safe_load(yaml.safe_dump({"init_args": {field: value}}))["init_args"][field]
    try:
        cls(**{field: loaded})
    except ConfigurationError as err:
        # every refusal names the field in backticks, the one form of an option error (the pruning fractions' order
        # names both fractions, so `in`, not `startswith`)
        assert f"`{field}`" in str(err), (field, loaded, str(err))


# -- run records as MLflow returns them -------------------------------------------------------------------------------
STATUSES = ["FINISHED", "RUNNING", "FAILED", "KILLED", "SCHEDULED"]
metric_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                          st.sampled_from([0.0, -1.0, 1.0, 1e30, 1e-30, float("nan"), float("inf")]))
tag_text = st.one_of(st.text(max_size=12), st.sampled_from(["1", "true", "True", "", "{}", "[]", "null",
                                                            '{"val_loss": "x"}', '{"val_loss": 1e999}',
                                                            '{"val_loss": true}', "{bad json"]))


@st.composite
def mlflow_runs(draw):
    """Runs as `search_runs` returns them: good ones, then each possibly damaged."""
    n = draw(st.integers(0, 10))
    names = draw(st.lists(st.sampled_from(["r0", "r1", "dup", "dup", None]), min_size=n, max_size=n))
    runs, histories = [], {}
    for i in range(n):
        N, D, L = good_run(draw)
        run_id = f"id{i}"
        metrics = {schema.TOKENS: D, schema.FLOPS: 6.6 * N * D, schema.PARAMS_AVG: N, schema.SPARSITY: 0.0,
                   "val_loss": L}
        params = {schema.params_count_key("non_embedding"): str(int(N)), schema.PARAMS_BASIS: "non_embedding"}
        tags = {schema.SCHEMA_TAG: "1", schema.COMPLETE_TAG: "true", schema.BEST_TAG: json.dumps({"val_loss": L})}
        status = "FINISHED"
        for damage in draw(st.lists(st.sampled_from(["drop", "value", "tag", "param", "status", "resumed"]),
                                    max_size=3)):
            if damage == "drop":
                metrics.pop(draw(st.sampled_from(sorted(metrics))), None)
            elif damage == "value":
                metrics[draw(st.sampled_from([schema.TOKENS, schema.FLOPS, schema.PARAMS_AVG, "val_loss"]))] = \
                    draw(metric_values)
            elif damage == "tag":
                tags[draw(st.sampled_from([schema.SCHEMA_TAG, schema.COMPLETE_TAG, schema.BEST_TAG,
                                           schema.SUMMARY_TAG]))] = draw(tag_text)
            elif damage == "param":
                params[draw(st.sampled_from(sorted(params)))] = draw(tag_text)
            elif damage == "status":
                status = draw(st.sampled_from(STATUSES))
            else:
                tags[schema.RESUMED_FROM_TAG] = draw(st.sampled_from([f"id{j}" for j in range(n)] + ["ghost"]))
        histories[run_id] = draw(st.lists(metric_values, max_size=3)) + [metrics.get("val_loss", float("nan"))]
        info = SimpleNamespace(run_id=run_id, run_name=names[i], status=status, start_time=1_000 * i, end_time=None)
        runs.append(SimpleNamespace(info=info, data=SimpleNamespace(metrics=metrics, params=params, tags=tags)))
    return runs, histories


class FakeClient:
    def __init__(self, histories):
        self.histories = histories

    def get_metric_history(self, run_id, key):
        values = self.histories.get(run_id, []) if key == "val_loss" else []
        return [SimpleNamespace(value=v, step=k, timestamp=k) for k, v in enumerate(values)]


def store_over(histories) -> MLflowRunStore:
    store = object.__new__(MLflowRunStore)  # no server: the records are built from the runs given
    store.client, store.loss_key, store.stale_after = FakeClient(histories), "val_loss", 1800.0
    return store


def check_used(record) -> None:
    """A record a fit may use: finished (or complete), with the schema, finite positive plausible N, D, C, loss."""
    assert record.status in USABLE_STATUSES or (record.status == "RUNNING" and record.complete)
    assert record.schema is not None and not record.is_summary
    for name, value in (("params", record.params), ("tokens", record.tokens), ("flops", record.flops),
                        ("loss", record.loss)):
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (name, value)
        if name in PLAUSIBLE:
            assert PLAUSIBLE[name][0] <= value <= PLAUSIBLE[name][1], (name, value)
    ratio = record.flops / (6 * record.params * record.tokens)
    assert FLOPS_RATIO[0] <= ratio <= FLOPS_RATIO[1]


@FAST
@given(runs=mlflow_runs())
def test_run_records_are_used_only_when_sound(runs):
    runs, histories = runs
    store = store_over(histories)
    records = [store.record(run) for run in runs]
    selection = select_runs(records, now=1e9)
    assert len(selection.used) + len(selection.excluded) == len(records)  # nothing dropped silently
    for record in selection.used:
        check_used(record)
    for _record, why in selection.excluded:
        assert isinstance(why, str) and why


@SLOWER
@given(runs=mlflow_runs())
def test_no_recommendation_is_built_on_a_bad_record(runs):
    runs, histories = runs
    store = store_over(histories)
    selection = select_runs([store.record(run) for run in runs], now=1e9)
    assume(len(selection.used) >= 3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec = plan_next_run(selection, n_bootstrap=0)
    except LightningScalingError as err:
        assert str(err)
        return
    used = {r["run_id"] for r in rec["runs"]["used"]}
    assert used == {r.run_id for r in selection.used}
    for record in selection.used:
        check_used(record)
    assert rec["status"] in ("ok", "degenerate", "insufficient_runs")


def test_an_implausible_record_is_left_out_naming_the_value():
    """The cases the generator may miss, pinned: 1e30 parameters, 1 token, FLOPs far from 6ND."""
    from lightning_scaling.runs import RunRecord

    base = dict(schema="1", loss=3.0, status="FINISHED")
    records = [RunRecord(run_id="huge", params=1e30, tokens=1e9, flops=6e39, **base),
               RunRecord(run_id="one-token", params=1e6, tokens=1.0, flops=6e6, **base),
               RunRecord(run_id="flops", params=1e6, tokens=1e9, flops=6e20, **base),
               RunRecord(run_id="fine", params=1e6, tokens=1e9, flops=7e15, **base)]
    selection = select_runs(records)
    reasons = {r.run_id: why for r, why in selection.excluded}
    assert [r.run_id for r in selection.used] == ["fine"]
    assert reasons["huge"].startswith("implausible: `params` is 1e+30")
    assert "`tokens` is 1, outside the range a training run can have [100, 1e+17]" in reasons["one-token"]
    assert "is 1e+05x 6ND" in reasons["flops"]


@pytest.mark.parametrize("row, message", [
    ("1e30,1e9,3.0", "line 2: `params` is 1e+30, outside the range"),
    ("1e6,1,3.0", "line 2: `tokens` is 1, outside the range"),
])
def test_a_csv_row_with_an_absurd_count_is_refused_naming_the_line(tmp_path, row, message):
    path = tmp_path / "runs.csv"
    path.write_text("params,tokens,loss\n" + row + "\n1e6,1e9,3.1\n")
    with pytest.raises(LightningScalingError, match=re.escape(message)):
        read_runs_csv(path)
