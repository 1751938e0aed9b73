"""The commands this package prints and documents run as printed, from the folder a user is in.

A console script does not put the working directory on the import path, so a config naming
`examples.tiny_gpt.TinyGPT` only trains when `lightning-scaling train` looks there itself (and in `--module-path`).
These tests therefore run the installed console script, never `python -m` (which would put the folder on the path
and hide the problem), with PYTHONPATH removed from its environment:

- fast: `train` from a folder without `examples/` exits 2 naming where it looked and `--module-path`; with
  `--module-path` it gets past the import; `split_train_options` and `module_search_path` as units; every
  `lightning-scaling ...` line in the README's code blocks names a command that exists, with options it accepts.
- slow: in a clean clone of the committed HEAD, `plan --format json` and then its cheapest run's `command`, exactly
  as printed, and the README's first training command; each ends as a FINISHED MLflow run with `val_loss`.

The console script imports the package its environment installed (in `make test` and CI, this repository).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_scaling.cli import COMMANDS
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.integrations.lightning_cli import TRAIN_OPTIONS, module_search_path, split_train_options

REPO = Path(__file__).resolve().parents[1]
CONFIG = "examples/tiny_gpt/config.yaml"
SCRIPT = Path(sys.executable).with_name("lightning-scaling")


def console_script() -> Path:
    if not SCRIPT.exists():
        pytest.skip("the package is not installed in this interpreter's environment (run `make test`)")
    return SCRIPT


def user_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH, so nothing but the console script decides the import path.

    One torch thread unless set: the tiny models train fastest on one, and on a busy 2-core machine two threads
    took 55 s for the README's run that one thread trains in 21 s.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def as_printed(command: str) -> list[str]:
    """`command` split as a shell would, its leading `lightning-scaling` the console script of this environment."""
    argv = shlex.split(command)
    assert argv[0] == "lightning-scaling", command
    return [str(console_script()), *argv[1:]]


def run(argv: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=timeout)


# --- train's own options, as units ------------------------------------------------------------------------------

def test_split_train_options_takes_both_spellings_and_passes_the_rest_on():
    own, rest = split_train_options([
        "--config", "c.yaml", "--module-path", "a", "--module-path=b", "--trainer.max_steps=3",
        "--checkpoint-dir=ck", "--module-paths=x", "--model.init_args.d_model", "32"])
    assert own == {"--module-path": ["a", "b"], "--checkpoint-dir": ["ck"]}
    # a longer option that starts with the same letters is LightningCLI's, as is everything else, in order
    assert rest == ["--config", "c.yaml", "--trainer.max_steps=3", "--module-paths=x",
                    "--model.init_args.d_model", "32"]


@pytest.mark.parametrize("option", TRAIN_OPTIONS)
def test_split_train_options_refuses_an_option_without_its_value(option):
    with pytest.raises(ConfigurationError, match=re.escape(option)):
        split_train_options(["--config", "c.yaml", option])


def test_module_search_path_is_the_module_paths_in_order_then_the_working_directory(tmp_path, monkeypatch):
    here = tmp_path.resolve()
    (here / "work").mkdir()
    monkeypatch.chdir(here / "work")
    other = here / "other"
    assert module_search_path(["family", str(other), "../up"]) == [
        str(here / "work" / "family"), str(other), str(here / "up"), str(here / "work")]
    assert module_search_path([]) == [str(here / "work")]


# --- train from a folder that does not hold the config's modules --------------------------------------------------

@pytest.fixture(scope="module")
def train_elsewhere(tmp_path_factory):
    """`train --config <repo>/examples/...` run from an empty folder, without and with `--module-path <repo>`.

    Both start at once (each spends its seconds importing torch, Lightning and MLflow). With `--module-path`,
    `--print_config` makes LightningCLI resolve the classes (it fills in their signatures' defaults) and stop
    before training.
    """
    script = console_script()
    folder = tmp_path_factory.mktemp("elsewhere").resolve()
    config = str(REPO / CONFIG)
    commands = {
        "without": [str(script), "train", "--config", config],
        "with": [str(script), "train", "--config", config, "--module-path", str(REPO), "--print_config"],
    }
    started = {key: subprocess.Popen(argv, cwd=folder, env=user_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for key, argv in commands.items()}
    done = {}
    for key, process in started.items():
        out, err = process.communicate(timeout=180)
        done[key] = (process.returncode, out, err)
    return folder, done


def test_train_elsewhere_exits_2_naming_where_it_looked_and_module_path(train_elsewhere):
    folder, done = train_elsewhere
    code, _, err = done["without"]
    assert code == 2, err
    assert "Traceback" not in err
    assert "No module named 'examples'" in err
    assert f"looked in: {folder}" in err
    assert "--module-path" in err and "`examples/`" in err


def test_train_elsewhere_with_module_path_imports_the_config_classes(train_elsewhere):
    folder, done = train_elsewhere
    code, out, err = done["with"]
    assert code == 0, err
    assert "class_path: examples.tiny_gpt.TinyGPT" in out
    assert "vocab_size: 256" in out  # a default of TinyGPT's signature, not in the YAML: the class was imported
    assert "class_path: examples.tiny_gpt.ByteCorpusDataModule" in out
    assert not (folder / "mlflow.db").exists()  # it stopped before training


# --- the README's commands ------------------------------------------------------------------------------------------

def readme_commands(text: str) -> list[str]:
    """Every `lightning-scaling ...` line in the README's fenced code blocks, with its indented continuation lines."""
    commands: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        if line.startswith("lightning-scaling "):
            commands.append(line.strip())
        elif commands and line[:1].isspace() and line.strip().startswith("["):
            commands[-1] += " " + line.strip()
    return commands


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    sub = argparse.ArgumentParser(prog="lightning-scaling").add_subparsers(dest="command")
    for command in COMMANDS.values():
        command.add_to(sub)
    return dict(sub.choices)


README_COMMANDS = readme_commands((REPO / "README.md").read_text())


def test_the_readme_shows_commands():
    assert len(README_COMMANDS) >= 10
    assert any(c.startswith("lightning-scaling train --config ") for c in README_COMMANDS)


@pytest.mark.parametrize("command", README_COMMANDS, ids=[f"{i}-{c.split()[1]}" for i, c in enumerate(README_COMMANDS)])
def test_a_readme_command_exists_with_the_options_it_shows(command):
    name = command.split()[1]
    assert name in COMMANDS, f"README: `{command}`: no command {name!r} (there are {', '.join(COMMANDS)})"
    for path in re.findall(r"--config[ =](\S*/\S*)", command):  # a real path, not a placeholder like SWEEP.yaml
        assert (REPO / path).is_file(), f"README: `{command}`: no file {path}"
    if name == "train":
        return  # LightningCLI reads the rest; the slow test below runs the first one
    known = command_parsers()[name]._option_string_actions
    flags = re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", command)
    unknown = [flag for flag in flags if flag not in known]
    assert not unknown, f"README: `{command}`: `lightning-scaling {name}` does not take {', '.join(unknown)}"


# --- the printed commands, in a clean clone -----------------------------------------------------------------------

@pytest.fixture
def clone(tmp_path) -> Path:
    """A clean clone of the committed HEAD: what a user has after `git clone`, with nothing else on the path."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout of the repository")
    target = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True, timeout=60)
    return target.resolve()


def training_runs(clone: Path) -> dict:
    """The training runs (not the summary run) of the config's experiment in the clone's store, by run id."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny-gpt")
    if experiment is None:
        return {}
    found = client.search_runs([experiment.experiment_id])
    return {r.info.run_id: r for r in found if r.data.tags.get("lightning_scaling.summary") != "true"}


def assert_trained(command: str, clone: Path, timeout: float) -> object:
    """Run `command` as printed from the clone's root; it must end as one new FINISHED MLflow run with val_loss."""
    before = training_runs(clone)
    out = run(as_printed(command), cwd=clone, timeout=timeout)
    assert out.returncode == 0, f"`{command}` exited {out.returncode}:\n{out.stderr[-3000:]}"
    new = [r for run_id, r in training_runs(clone).items() if run_id not in before]
    assert len(new) == 1, f"`{command}`: {len(new)} new training runs in the clone's mlflow.db"
    assert new[0].info.status == "FINISHED"
    assert "val_loss" in new[0].data.metrics
    return new[0]


@pytest.mark.slow
def test_plans_printed_command_and_the_readmes_train_command_run_as_printed_in_a_clone(clone):
    planned = run(as_printed(f"lightning-scaling plan --config {CONFIG} --target-flops 1e13 --budget 2.5e12 "
                             "--format json"), cwd=clone, timeout=120)
    assert planned.returncode == 0, planned.stderr
    runs = json.loads(planned.stdout)["runs"]
    cheapest = min(runs, key=lambda r: r["flops"])
    assert cheapest["command"].startswith(f"lightning-scaling train --config {CONFIG} ")
    trained = assert_trained(cheapest["command"], clone, timeout=180)  # 88 steps of d_model 32: ~10 s on 2 cores
    assert trained.info.run_name == cheapest["name"]
    for key in ("d_model", "n_layer", "n_head"):
        assert int(trained.data.params[key]) == cheapest["architecture"][key]
    assert trained.data.metrics["scaling/tokens"] == pytest.approx(cheapest["tokens"])  # all the planned steps
    # the README's first training command as written (400 steps of d_model 64: ~20 s on 2 cores)
    shown = readme_commands((clone / "README.md").read_text())
    first = next(c for c in shown if c.startswith("lightning-scaling train"))
    assert_trained(first, clone, timeout=240)
