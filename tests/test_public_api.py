"""The public API: each subpackage's `__init__` says with `__all__` what users may import.

Every name in every `__all__` of the package imports, none is private or listed twice, and the subpackages that are
meant to stay cheap to import stay so (`integrations` imports its MLflow- and Lightning-heavy names on first use).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightning_scaling"
# The subpackages whose `__init__` is their public API.
PUBLIC = ("lightning_scaling", "lightning_scaling.callbacks", "lightning_scaling.integrations",
          "lightning_scaling.law", "lightning_scaling.nn", "lightning_scaling.plugins", "lightning_scaling.runs",
          "lightning_scaling.schedules")


def modules_with_all() -> list[str]:
    """Every module of the package that declares `__all__`, found by reading the source (no hand-kept list)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        targets = [t for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
        declares = any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)
        if declares:
            parts = path.relative_to(ROOT).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def test_every_public_subpackage_declares_all():
    assert set(PUBLIC) <= set(modules_with_all())


@pytest.mark.parametrize("name", modules_with_all())
def test_every_name_in_all_imports_and_none_is_private(name):
    module = importlib.import_module(name)
    names = list(module.__all__)
    assert len(names) == len(set(names)), f"{name}.__all__ lists a name twice"
    private = [n for n in names if n.startswith("_")]
    assert not private, f"{name}.__all__ lists private names {private}"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names the module lacks: {missing}"


@pytest.mark.parametrize("name", PUBLIC)
def test_star_import_gives_exactly_all(name):
    namespace: dict = {}
    exec(f"from {name} import *", namespace)
    assert sorted(n for n in namespace if n != "__builtins__") == sorted(importlib.import_module(name).__all__)


def test_the_seams_the_examples_use():
    from lightning_scaling.integrations import MLflowRunStore, MLflowSaveConfigCallback, namespace_of
    from lightning_scaling.law import CHINCHILLA_PAPER_LAW, ChinchillaFit, FitWarning, SeparableLawFit, synthetic_runs
    from lightning_scaling.runs import RunRecord, Selection, read_runs_csv, select_runs

    assert ChinchillaFit.__module__ == FitWarning.__module__ == "lightning_scaling.law.fit"
    assert SeparableLawFit.__module__ == "lightning_scaling.law.separable"
    assert synthetic_runs(CHINCHILLA_PAPER_LAW, [1e18, 1e19, 1e20])[0].size == 15
    assert MLflowRunStore.__module__ == "lightning_scaling.integrations.mlflow_store"
    assert MLflowSaveConfigCallback.__module__ == "lightning_scaling.integrations.lightning_cli"
    assert callable(namespace_of) and callable(read_runs_csv) and callable(select_runs)
    assert RunRecord.__module__ == Selection.__module__ == "lightning_scaling.runs.records"


def test_importing_integrations_pulls_no_framework():
    code = ("import sys, lightning_scaling.integrations as i\n"
            "assert 'MLflowRunStore' in i.__all__\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('mlflow', 'lightning', 'pytorch_lightning', 'torch', 'matplotlib')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def documented_imports() -> list[tuple[str, str, str]]:
    """(where, module, name) of every `from lightning_scaling... import name` in the README's code and the examples."""
    import re

    sources = [("README.md", "\n".join(re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)))]
    sources += [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "examples").rglob("*.py"))]
    out = []
    for where, text in sources:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lightning_scaling"):
                out += [(where, node.module, alias.name) for alias in node.names]
    return out


def test_the_readme_and_the_examples_import_only_public_names():
    found = documented_imports()
    assert len(found) > 10 and ("README.md", "lightning_scaling.law", "ChinchillaFit") in found
    for where, module, name in found:
        is_package = (PACKAGE.joinpath(*module.split(".")[1:]) / "__init__.py").exists()
        assert is_package or module == "lightning_scaling.hookspecs", f"{where} imports the module path {module}"
        is_subpackage = (PACKAGE.joinpath(*module.split(".")[1:], name) / "__init__.py").exists()
        public = importlib.import_module(module).__all__
        assert name in public or is_subpackage, f"{where}: {name} is not in {module}.__all__"
