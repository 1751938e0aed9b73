"""The install order's premise: mup works without torchvision (see tools/install.py)."""

import subprocess
import sys


def test_mup_imports_without_torchvision():
    code = (
        "import sys, importlib.abc\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, n, p=None, t=None):\n"
        "        if n.split('.')[0] == 'torchvision': raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, B())\n"
        "import mup, mup.coord_check\n"
        "from mup import MuReadout, MuAdamW, set_base_shapes\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
