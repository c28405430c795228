"""msearch/ is the pure core: it must import and work with Ray unavailable."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import importlib, pkgutil, sys
sys.modules["ray"] = None  # any "import ray" now raises ImportError
import msearch
names = [m.name for m in pkgutil.walk_packages(msearch.__path__, "msearch.")]
for name in names:
    importlib.import_module(name)
assert "ray" not in [m for m in sys.modules if sys.modules[m] is not None]
print(len(names))
"""


def test_core_imports_without_ray():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 15
