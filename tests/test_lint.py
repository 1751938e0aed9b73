"""The code stays within the house limits: `ruff check` passes on the repository (configured in `pyproject.toml`),
and a size check written with `ast`: no module of `lightning_scaling` over 400 lines, no function over 60 lines of
code (its docstring, blank lines and comment lines not counted), except the numeric kernels listed in
`pyproject.toml` under ``[tool.lightning_scaling.size_exceptions]``, each with its reason.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightning_scaling"
MAX_MODULE_LINES = 400  # one concept per module (the house style: 80-500 lines, mup's 84-209)
MAX_FUNCTION_LINES = 60  # a function that reads on one screen


def ruff_command() -> list[str] | None:
    """How to run ruff here: the module of this interpreter's environment, else the executable on PATH."""
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    found = shutil.which("ruff")
    return [found] if found else None


def size_exceptions() -> dict[str, str]:
    """``[tool.lightning_scaling.size_exceptions]`` of pyproject.toml: "path.py::function" or "path.py" -> reason."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config.get("tool", {}).get("lightning_scaling", {}).get("size_exceptions", {})


def code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> int:
    """Lines of code of a function: its lines less its docstring, blank lines and comment lines."""
    first = node.body[0]
    docstring = set()
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        docstring = set(range(first.lineno, first.end_lineno + 1))
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return sum(1 for i in range(start, node.end_lineno + 1)
               if i not in docstring and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))


def oversized() -> dict[str, str]:
    """Every module over `MAX_MODULE_LINES` and function over `MAX_FUNCTION_LINES`: key -> what it measures."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        key = path.relative_to(ROOT).as_posix()
        if len(lines) > MAX_MODULE_LINES:
            found[key] = f"{len(lines)} lines"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = code_lines(node, lines)
                if n > MAX_FUNCTION_LINES:
                    found[f"{key}::{node.name}"] = f"{n} lines of code (line {node.lineno})"
    return found


def test_ruff_check_passes():
    command = ruff_command()
    if command is None:
        pytest.skip("ruff is not installed (it is in the `dev` extra: pip install -e '.[dev]')")
    out = subprocess.run([*command, "check", "--output-format", "concise", str(ROOT)], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_modules_and_functions_within_the_size_limits():
    exceptions = size_exceptions()
    over = {key: size for key, size in oversized().items() if key not in exceptions}
    assert not over, "over the size limits (split them, or list a numeric kernel in pyproject.toml's " \
                     f"[tool.lightning_scaling.size_exceptions] with its reason): {over}"


def test_each_size_exception_has_a_reason_and_is_still_needed():
    exceptions = size_exceptions()
    measured = oversized()
    for key, reason in exceptions.items():
        assert isinstance(reason, str) and reason.strip(), f"size exception {key!r} needs a reason"
        assert key in measured, f"size exception {key!r} is within the limits now (or gone): remove it"


def test_the_size_check_counts_code_not_docstrings_or_comments():
    source = 'def f():\n    """Doc\n\n    more doc.\n    """\n    # a comment\n\n    x = 1\n    return x\n'
    node = ast.parse(source).body[0]
    assert code_lines(node, source.splitlines()) == 3  # def, assignment, return
