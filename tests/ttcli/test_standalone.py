"""tt and ttclient stand alone: they are installed by `pip install` of the repo, where the
Django project is not a package, so no module of theirs may import Django or the project's
apps; and `tt --help` starts fast, which means it imports no httpx, Rich, YAML or websockets
(each imported by the commands that use them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT_APPS = ("django", "rest_framework", "engines", "ttportal", "operations", "nodes", "accounts", "vms",
                "envs", "notifications")


def modules_of(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] != "__main__":
            found.append(".".join(parts))
    return found


BLOCK = f"""
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {PROJECT_APPS!r} or name.startswith("django_"):
            raise ImportError(f"the command line imported {{name}}")
        return None

sys.meta_path.insert(0, Blocked())
for module in sys.argv[1:]:
    __import__(module)
print("ok", len(sys.argv) - 1)
"""


def test_tt_and_ttclient_import_nothing_of_the_server():
    modules = modules_of("ttclient") + modules_of("ttcli")
    assert {"ttclient.client", "ttcli.main", "ttcli.commands.envs"} <= set(modules)
    result = subprocess.run([sys.executable, "-c", BLOCK, *modules], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {len(modules)}"


def test_help_imports_no_heavy_library():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "ttcli", "--help"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0 and "Usage: tt" in result.stdout, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    heavy = {"httpx", "rich", "yaml", "websockets", "platformdirs", "markdown_it"} & imported
    assert not heavy, f"tt --help imported {sorted(heavy)}"
