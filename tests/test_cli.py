"""The command line: `fit`, `recommend` and `demo`, JSON keys, text output, and errors with exit status 2; the table
of commands, and the heavy stacks left unimported by the commands that do not need them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import grid_runs, shared_csv

from lightning_scaling.cli import COMMANDS, build_parser, main

FIT_KEYS = {"law", "E", "A", "B", "alpha", "beta", "objective", "n_runs", "params_column"}


@pytest.fixture
def runs_csv(tmp_path):
    N, D, L = grid_runs(noise=0.01)
    path = tmp_path / "runs.csv"
    path.write_text("params,tokens,loss\n" + "".join(f"{n},{d},{l}\n" for n, d, l in zip(N, D, L)))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_json_has_the_documented_keys(capsys, runs_csv):
    code, out, _ = run(capsys, "fit", runs_csv, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert FIT_KEYS <= set(data)
    assert data["n_runs"] == 25 and data["params_column"] == "params"
    assert "E_low" not in data


def test_fit_with_bootstrap_adds_bounds(capsys, runs_csv):
    code, out, _ = run(capsys, "fit", runs_csv, "--format", "json", "--bootstrap", "100", "--seed", "3")
    data = json.loads(out)
    for name in ("E", "A", "B", "alpha", "beta"):
        assert data[f"{name}_low"] <= data[name] <= data[f"{name}_high"]
    assert data["confidence"] == 0.8 and data["bootstrap"] == 100 and data["seed"] == 3
    # reproducible
    _, out2, _ = run(capsys, "fit", runs_csv, "--format", "json", "--bootstrap", "100", "--seed", "3")
    assert json.loads(out2) == data


def test_recommend_json(capsys, runs_csv):
    code, out, _ = run(capsys, "recommend", runs_csv, "--flops", "1e21", "--format", "json", "--bootstrap", "200")
    assert code == 0
    data = json.loads(out)
    assert FIT_KEYS | {"params", "tokens", "flops", "loss"} <= set(data)
    assert data["flops"] == 1e21
    assert 6 * data["params"] * data["tokens"] == pytest.approx(1e21)
    for key in ("params", "tokens", "flops", "loss"):
        assert data[f"{key}_low"] <= data[key] <= data[f"{key}_high"], key
    assert data["sentence"].startswith("Train next a model of")


def test_recommend_text(capsys, runs_csv):
    code, out, _ = run(capsys, "recommend", runs_csv, "--flops", "1e21", "--bootstrap", "100")
    assert code == 0
    assert "compute-optimal run for C = 1e+21 FLOPs" in out and "80% interval" in out
    assert "Train next a model of" in out


def test_params_avg_column_is_reported(capsys, tmp_path):
    N, D, L = grid_runs()
    path = tmp_path / "sparse.csv"
    path.write_text("params,params_avg,tokens,loss\n"
                    + "".join(f"{n},{0.625 * n},{d},{l}\n" for n, d, l in zip(N, D, L)))
    _, out, _ = run(capsys, "fit", path, "--format", "json")
    assert json.loads(out)["params_column"] == "params_avg"
    _, out, _ = run(capsys, "recommend", path, "--flops", "1e20")
    assert "average non-zero parameters (N_avg)" in out


def test_bad_csv_exits_2_with_the_message(capsys, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("params,tokens,loss,colour\n1,2,3,red\n")
    code, out, err = run(capsys, "fit", path)
    assert code == 2 and out == ""
    assert "unknown column(s) ['colour']" in err


def test_too_few_runs_exits_2_and_says_what_to_add(capsys, tmp_path):
    path = tmp_path / "few.csv"
    path.write_text("params,tokens,loss\n1e6,2e7,4.0\n2e6,4e7,3.8\n")
    code, _, err = run(capsys, "fit", path)
    assert code == 2 and "Add runs such as: N=" in err


def test_missing_file_exits_2(capsys, tmp_path):
    code, _, err = run(capsys, "fit", tmp_path / "nope.csv")
    assert code == 2 and "nope.csv" in err


@pytest.mark.parametrize("argv, match", [
    (["recommend", "x.csv", "--flops", "-3"], "must be a number > 0, got '-3'"),
    (["fit", "x.csv", "--bootstrap", "5"], "must be 0 or an integer >= 10, got .5."),
    (["fit", "x.csv", "--format", "yaml"], "invalid choice: 'yaml'"),
    (["fit", "x.csv", "--confidence", "1.5"], r"must be in \(0, 1\)"),
])
def test_option_errors(capsys, argv, match):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    import re
    assert re.search(match, capsys.readouterr().err)


def test_recommend_csv_needs_a_budget(capsys, runs_csv):
    code, _, err = run(capsys, "recommend", runs_csv)
    assert code == 2 and "`recommend RUNS.csv` needs --flops C" in err


def test_recommend_without_csv_needs_a_store(capsys):
    code, _, err = run(capsys, "recommend", "--flops", "1e20")
    assert code == 2 and "give both --tracking-uri and --experiment" in err


def test_demo_recommends_and_covers_the_truth(capsys):
    code, out, _ = run(capsys, "demo", "--format", "json")
    data = json.loads(out)
    assert code == 0
    truth = data["demo"]["true_optimum"]
    assert data["params_low"] <= truth["params"] <= data["params_high"]
    assert data["boundary"] == []


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("lightning-scaling")
    if not exe.exists():
        pytest.skip("the package is not installed in this interpreter's environment (run `make test`)")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "recommend" in out.stdout


def test_recommend_on_the_chinchilla_data(capsys):
    path = shared_csv("chinchilla_epoch.csv")
    code, out, _ = run(capsys, "recommend", path, "--flops", "5.76e23", "--format", "json")
    data = json.loads(out)
    assert data["n_runs"] == 240 and 3e10 < data["params"] < 1e11


# -- backtest and predict ---------------------------------------------------------------------------------------
@pytest.fixture
def isoflop_csv(tmp_path):
    from conftest import TRUE_LAW

    from lightning_scaling.law.synthetic import synthetic_runs

    N, D, L = synthetic_runs(TRUE_LAW, [1e17, 3e17, 1e18, 3e18, 1e19, 3e19], sizes_per_budget=5, noise=0.005, seed=1)
    path = tmp_path / "iso.csv"
    path.write_text("params,tokens,loss\n" + "".join(f"{n},{d},{l}\n" for n, d, l in zip(N, D, L)))
    return path


def test_backtest_json_and_text(capsys, isoflop_csv):
    code, out, _ = run(capsys, "backtest", isoflop_csv, "--format", "json", "--law", "chinchilla")
    assert code == 0
    data = json.loads(out)
    assert data["form"] == "chinchilla" and data["design"] == "isoflop" and len(data["folds"]) == 3
    for fold in data["folds"]:
        assert {"train_runs", "test_runs", "mape", "covered", "coverage", "isoflop"} <= set(fold)
    assert data["held_out"] == sum(f["test_runs"] for f in data["folds"])
    code, out, _ = run(capsys, "backtest", isoflop_csv)
    assert code == 0
    assert "law form: " in out and "N_opt law / isoFLOP" in out and "the law fitted on budgets below 3e+19" in out


def test_predict_json_is_a_list_with_the_interval(capsys, isoflop_csv, tmp_path):
    points = tmp_path / "points.csv"
    points.write_text("params,tokens\n1e8,2e9\n1e9,2e10\n")
    code, out, _ = run(capsys, "predict", isoflop_csv, "--at", points, "--format", "json", "--confidence", "0.9")
    assert code == 0
    rows = json.loads(out)
    assert [(r["params"], r["tokens"]) for r in rows] == [(1e8, 2e9), (1e9, 2e10)]
    assert all(r["loss_low"] < r["loss"] < r["loss_high"] and r["confidence"] == 0.9 for r in rows)
    code, out, _ = run(capsys, "predict", isoflop_csv, "--at", points)
    assert code == 0 and "90%" not in out and "80% prediction intervals" in out


@pytest.mark.parametrize("content, match", [
    ("params\n1e8\n", r"missing column\(s\) \['tokens'\]"),
    ("params,tokens\n1e8,-5\n", r"line 2: `tokens` must be a finite number > 0, got '-5'"),
    ("params,tokens\nabc,1e9\n", r"line 2: `params` is not a number: 'abc'"),
    ("params,tokens\n", "no points"),
])
def test_predict_bad_points_name_the_line_and_column(capsys, isoflop_csv, tmp_path, content, match):
    import re

    points = tmp_path / "points.csv"
    points.write_text(content)
    code, _, err = run(capsys, "predict", isoflop_csv, "--at", points)
    assert code == 2 and re.search(match, err), err


def test_backtest_with_an_unknown_law_names_the_choices(capsys, isoflop_csv):
    code, _, err = run(capsys, "backtest", isoflop_csv, "--law", "kaplan")
    assert code == 2
    assert "`law` must be 'auto' or one of ['chinchilla', 'data_constrained', 'exponent_interaction']" in err


def test_backtest_needs_runs(capsys):
    code, _, err = run(capsys, "backtest")
    assert code == 2 and "--tracking-uri and --experiment" in err


# -- the table of commands ----------------------------------------------------------------------------------------
def test_every_command_of_the_table_is_parsed_listed_and_documented(capsys):
    import lightning_scaling.cli as cli

    parser = build_parser()
    names = list(COMMANDS)
    assert names == ["fit", "recommend", "runs", "backtest", "predict", "forecast", "plan", "sweep", "demo", "train",
                     "coord-check"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    listed = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert f"lightning-scaling {name} " in cli.__doc__, name
        assert name in listed and command.help[:40] in " ".join(listed.split()), name
        assert (command.forward is None) == (command.run is not None and command.text is not None), name


def test_module_form_runs_the_same_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lightning_scaling.cli", "fit", str(tmp_path / "nope.csv")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "lightning-scaling fit: error:" in out.stderr and "nope.csv" in out.stderr


def test_fit_from_a_csv_imports_neither_mlflow_nor_torch(runs_csv):
    """MLflow, Lightning and torch are imported by `cli.deferred` only when a command that needs them runs."""
    script = ("import sys\n"
              "from lightning_scaling.cli import main\n"
              f"assert main(['fit', {str(runs_csv)!r}]) == 0\n"
              "assert main(['recommend', " + repr(str(runs_csv)) + ", '--flops', '1e21']) == 0\n"
              "print('LOADED', sorted({n.split('.')[0] for n in sys.modules} & {'mlflow', 'torch', 'lightning'}))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout
