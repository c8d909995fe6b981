"""The engine layer runs without Django: drivers get plain data and raise plain errors.

Checked in a fresh interpreter where importing Django fails, so a stray import
anywhere below these modules is caught, however indirect.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ENGINE_MODULES = [
    "engines.errors",
    "engines.specs",
    "engines.base",
    "engines.libvirt.engine",
    "engines.libvirt.connection",
    "engines.libvirt.console",
    "engines.libvirt.xml",
    "engines.libvirt.host",
    "engines.libvirt.template_builder",
    "engines.network.addresses",
    "engines.network.firewall",
    "engines.network.nftables",
    "engines.network.wiring",
    "engines.kvm",
    "engines.docker.engine",
    "engines.docker.host",
    "engines.docker.hostport",
    "engines.docker.image_builder",
    "engines.firecracker.engine",
    "engines.firecracker.host",
    "engines.firecracker.schemas",
]

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


def test_the_blocker_really_blocks():
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_DJANGO, "engines.models"], cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "the engine layer imported django" in result.stderr
