"""The engine layer (the whole engines package) runs without Django: drivers get plain
data and raise plain errors.

Checked in a fresh interpreter where importing Django fails, so a stray import
anywhere below these modules is caught, however indirect.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PACKAGE = ROOT / "engines"


def engine_modules() -> list[str]:
    """Every module of the engines package, found on disk: a new one is checked the day
    it is added. The package holds no Django app (its old migrations are nodes/history's)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append(".".join(parts))
    return found


ENGINE_MODULES = engine_modules()


BLOCK_DJANGO = """
import importlib.abc, sys

class NoDjango(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "django" or name.startswith(("django.", "django_", "rest_framework")):
            raise ImportError(f"the engine layer imported {name}")
        return None

sys.meta_path.insert(0, NoDjango())
for module in sys.argv[1:]:
    __import__(module)
print("ok", len(sys.argv) - 1)
"""


def test_it_imports_the_engines_with_django_blocked():
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_DJANGO, *ENGINE_MODULES], cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {len(ENGINE_MODULES)}"


def test_every_module_of_the_package_is_checked():
    assert {"engines", "engines.base", "engines.libvirt.engine", "engines.firecracker.api",
            "engines.network.nftables"} <= set(ENGINE_MODULES)
    assert not (PACKAGE / "models.py").exists() and not (PACKAGE / "apps.py").exists()
    assert not (PACKAGE / "migrations").exists() and not (PACKAGE / "management").exists()


def test_the_blocker_really_blocks():
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_DJANGO, "nodes.models"], cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "the engine layer imported django" in result.stderr
