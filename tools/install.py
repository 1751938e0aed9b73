"""Install lightning-scaling and its dependencies into the running interpreter's environment, CPU-first.

Why not a plain `pip install -e .`: `mup` declares `torchvision` as a dependency but never imports it
(checked in mup 1.0.0: no module of the package imports torchvision). Resolving torchvision makes pip replace a
CPU build of torch by a matching CUDA build (several GB). So the order is:

1. torch, pinned to the CPU build when one is given (`TORCH_SPEC`, default `torch==2.13.0`);
2. every other dependency declared in pyproject.toml (and the `dev` extra with `--dev`), except mup;
3. mup itself with `--no-deps` (its other requirements, numpy/pandas/tqdm/pyyaml/seaborn, go in step 2);
4. this project in editable mode with `--no-deps`.

Usage: python tools/install.py [--dev]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_DEPS = ("mup",)  # installed with --no-deps: see the module docstring
MUP_RUNTIME = ("numpy", "pandas", "tqdm", "pyyaml", "seaborn")  # mup 1.0.0's requirements less torch(vision)


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        _pip("install", "tomli")
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: list[str]) -> int:
    start = time.perf_counter()
    project = _pyproject()["project"]
    requirements = list(project["dependencies"])
    if "--dev" in argv:
        requirements += project["optional-dependencies"]["dev"]
    torch_spec = os.environ.get("TORCH_SPEC", "torch==2.13.0")
    _pip("install", "--quiet", torch_spec)
    held_back = [r for r in requirements if _name(r) in NO_DEPS]
    rest = [r for r in requirements if _name(r) not in NO_DEPS and _name(r) != "torch"]
    _pip("install", "--quiet", *rest, *MUP_RUNTIME)
    _pip("install", "--quiet", "--no-deps", *held_back)
    _pip("install", "--quiet", "--no-deps", "--no-build-isolation", "-e", str(ROOT))
    print(f"installed in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
