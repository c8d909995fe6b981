"""The tt command imports envfile without Django (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.engines.test_no_django import BLOCK_DJANGO

ROOT = Path(__file__).resolve().parents[2]


def test_envfile_loads_a_file_with_django_blocked():
    script = BLOCK_DJANGO + "\nimport envfile\nenvfile.load('name: a\\nvms: [{name: b, template: t}]\\n')\n"
    result = subprocess.run([sys.executable, "-c", script, "envfile", "envfile.model"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
