"""The pure core imports with lightning, torch and mlflow blocked (STYLE: pure core, thin wiring)."""

import subprocess
import sys
import textwrap

BLOCKED = ("lightning", "pytorch_lightning", "lightning_fabric", "torch", "mlflow", "mup")
CORE = ("lightning_scaling", "lightning_scaling.law.fit", "lightning_scaling.law.objective", "lightning_scaling.law.search",
        "lightning_scaling.law.allocation", "lightning_scaling.law.bootstrap", "lightning_scaling.law.isoflop",
        "lightning_scaling.runs", "lightning_scaling.advice.recommendation", "lightning_scaling.law.synthetic",
        "lightning_scaling.law.chinchilla", "lightning_scaling.cli")


def test_core_imports_with_frameworks_blocked():
    code = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import importlib
        for m in {CORE!r}:
            importlib.import_module(m)
        from lightning_scaling import ChinchillaFit
        from lightning_scaling.law.synthetic import CHINCHILLA_PAPER_LAW, synthetic_runs
        fit = ChinchillaFit().fit(*synthetic_runs(CHINCHILLA_PAPER_LAW, [1e18, 1e19, 1e20]))
        loaded = sorted(n for n in sys.modules if n.split(".")[0] in {BLOCKED!r})
        print("LOADED", loaded)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout


def test_block_is_effective():
    code = ("import sys, importlib.abc\n"
            "class B(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, n, p=None, t=None):\n"
            "        if n.split('.')[0] == 'torch': raise ImportError('blocked')\n"
            "sys.meta_path.insert(0, B())\nimport torch\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "blocked" in out.stderr
