"""The layers hold: the import contracts of `pyproject.toml` (`[tool.importlinter]`), checked by import-linter, and
every module of the pure packages importing and fitting with torch, Lightning, MLflow and mup blocked."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("lightning", "pytorch_lightning", "lightning_fabric", "torch", "mlflow", "mup")
PURE = ("law", "evaluation", "curves", "runs", "planner", "schedules", "plugins")


def test_import_contracts_hold():
    importlinter = pytest.importorskip("importlinter.cli")
    assert importlinter.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def pure_modules() -> list[str]:
    """Every module of the pure packages, found by walking them (no hand-kept list)."""
    import lightning_scaling

    out = ["lightning_scaling", "lightning_scaling.errors", "lightning_scaling.options", "lightning_scaling.hookspecs"]
    for sub in PURE:
        package = f"lightning_scaling.{sub}"
        out.append(package)
        path = [str(Path(lightning_scaling.__file__).parent / sub)]
        out += [f"{package}.{m.name}" for m in pkgutil.iter_modules(path)]
    return out


def test_pure_packages_import_and_fit_with_the_frameworks_blocked():
    modules = pure_modules()
    assert len(modules) > 25 and "lightning_scaling.law.form" in modules
    code = textwrap.dedent(f"""
        import sys, importlib, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        for m in {modules!r}:
            importlib.import_module(m)
        from lightning_scaling import ChinchillaFit
        from lightning_scaling.law.synthetic import CHINCHILLA_PAPER_LAW, synthetic_runs
        fit = ChinchillaFit().fit(*synthetic_runs(CHINCHILLA_PAPER_LAW, [1e18, 1e19, 1e20]))
        fit.bootstrap(20)
        from lightning_scaling.plugins import law_forms
        assert "chinchilla" in law_forms()
        print("LOADED", sorted(n for n in sys.modules if n.split(".")[0] in {BLOCKED!r}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"LIGHTNING_SCALING_DISABLE_PLUGIN_AUTOLOAD": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout


def test_the_block_is_effective():
    code = ("import sys, importlib.abc\n"
            "class B(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, n, p=None, t=None):\n"
            "        if n.split('.')[0] == 'torch': raise ImportError('blocked')\n"
            "sys.meta_path.insert(0, B())\nimport torch\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "blocked" in out.stderr
