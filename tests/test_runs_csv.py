"""Run tables from CSV: columns, N_avg, and errors that name the column or line."""

import math

import numpy as np
import pytest
from conftest import grid_runs

from lightning_scaling import InsufficientRunsError, ScalingDataError
from lightning_scaling.runs import distinct, read_runs_csv, suggest_runs


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def test_reads_required_and_optional_columns(tmp_path):
    N, D, L = grid_runs()
    rows = [(f"r{i}", n, d, 6 * n * d, l) for i, (n, d, l) in enumerate(zip(N, D, L))]
    table = read_runs_csv(write_csv(tmp_path / "runs.csv", ["run_id", "params", "tokens", "flops", "loss"], rows))
    np.testing.assert_allclose(table.N, N)
    np.testing.assert_allclose(table.flops, 6 * N * D)
    assert table.run_ids[3] == "r3" and table.params_column == "params"


def test_params_avg_is_used_as_N_and_blank_means_dense(tmp_path):
    N, D, L = grid_runs()
    rows = [(n, "" if i % 2 else 0.625 * n, d, l) for i, (n, d, l) in enumerate(zip(N, D, L))]
    table = read_runs_csv(write_csv(tmp_path / "runs.csv", ["params", "params_avg", "tokens", "loss"], rows))
    assert table.params_column == "params_avg"
    assert table.N[0] == pytest.approx(0.625 * N[0]) and table.N[1] == pytest.approx(N[1])
    np.testing.assert_allclose(table.dense_params, N)


def test_unknown_and_missing_columns_are_listed(tmp_path):
    path = write_csv(tmp_path / "runs.csv", ["params", "toks", "loss"], [(1, 2, 3)])
    with pytest.raises(ScalingDataError) as info:
        read_runs_csv(path)
    msg = str(info.value)
    assert "missing column(s) ['tokens']" in msg and "unknown column(s) ['toks']" in msg
    assert "found ['params', 'toks', 'loss']" in msg
    optional = "['flops', 'params_avg', 'run_id', 'unique_tokens', 'lr', 'budget', 'group']"
    assert f"expected ['params', 'tokens', 'loss'] and optionally {optional}" in msg


def test_non_number_names_the_line(tmp_path):
    path = write_csv(tmp_path / "runs.csv", ["run_id", "params", "tokens", "loss"],
                     [("a", 1e6, 1e9, 3.0), ("b", "x", 1e9, 3)])
    with pytest.raises(ScalingDataError, match=r"line 3 \(run_id=b\): `params` is not a number: 'x'"):
        read_runs_csv(path)


@pytest.mark.parametrize("bad, match", [("nan", r"line 2: `loss` is NaN"), ("-1", r"line 2: `loss` is not positive"),
                                        ("inf", r"line 2: `loss` is infinite")])
def test_invalid_values_name_the_line(tmp_path, bad, match):
    path = write_csv(tmp_path / "runs.csv", ["params", "tokens", "loss"], [(1e6, 1e9, bad), (2e6, 1e9, 3.0)])
    with pytest.raises(ScalingDataError, match=match):
        read_runs_csv(path)


def test_header_only_file(tmp_path):
    path = write_csv(tmp_path / "runs.csv", ["params", "tokens", "loss"], [])
    with pytest.raises(InsufficientRunsError, match=r"no runs"):
        read_runs_csv(path)


def test_distinct_merges_float_noise():
    assert len(distinct([1e6, 1e6 * (1 + 1e-6), 2e6])) == 2


def test_suggested_runs_form_an_isoflop_group_at_the_largest_compute():
    N, D = np.array([1e6, 2e6]), np.array([2e7, 4e7])
    s = suggest_runs(N, D, 3)
    C = 6 * 2e6 * 4e7
    assert len(s) == 3
    assert all(math.isclose(x["flops"], C, rel_tol=0.01) for x in s)
    assert len({x["params"] for x in s}) == 3


def test_repeats_of_one_size_and_budget_count_once_toward_the_five_points(tmp_path, capsys):
    """Five runs at three (N, D) points cannot determine five parameters: refused, naming the points, instead of
    a recommendation from an exactly interpolating fit (found by the hypothesis test of hostile CSV tables)."""
    from lightning_scaling.cli import main

    rows = ["params,tokens,loss"] + ["10000,1000000,28.01"] * 3 + ["100000,10000000,14.30", "1000000,100000000,7.76"]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    assert main(["recommend", str(tmp_path / "r.csv"), "--flops", "1e20", "--bootstrap", "0"]) == 2
    assert "at least 5 distinct (params, tokens) points (got 3" in capsys.readouterr().err
