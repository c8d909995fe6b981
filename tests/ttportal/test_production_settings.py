"""Production settings (TT_DEBUG=0): Django's deployment checklist passes as configured,
the secret key may come from a file, and a wrong value is refused by name."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, tmp_path: Path, **env_vars) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_")}
    env.update(TT_VAR_DIR=str(tmp_path), TT_DEBUG="0", **env_vars)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_it_passes_the_deployment_checklist_without_a_warning(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path,
                    TT_SECRET_KEY=secrets.token_urlsafe(50))
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_it_reads_the_secret_key_from_a_file(tmp_path):
    key_file = tmp_path / "secret_key"
    key_file.write_text(secrets.token_urlsafe(50) + "\n")
    result = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path,
                    TT_SECRET_KEY_FILE=str(key_file))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TT_SECRET_KEY_FILE", "/nonexistent/secret", "TT_SECRET_KEY_FILE: cannot read"),
        ("TT_METRICS_ALLOWED", "127.0.0.1/32,localhost", "TT_METRICS_ALLOWED must list networks"),
        ("TT_TRUSTED_PROXIES", "10.0.0.0/33", "TT_TRUSTED_PROXIES must list networks"),
        ("TT_CSRF_TRUSTED_ORIGINS", "tt.example.com", "TT_CSRF_TRUSTED_ORIGINS must list origins"),
        ("TT_HSTS_SECONDS", "a year", "TT_HSTS_SECONDS must be an integer"),
        ("TT_SSL_REDIRECT", "maybe", "TT_SSL_REDIRECT must be a boolean"),
    ],
)
def test_it_refuses_a_bad_production_variable_by_name(tmp_path, name, value, message):
    env = {name: value}
    if name != "TT_SECRET_KEY_FILE":
        env["TT_SECRET_KEY"] = secrets.token_urlsafe(50)
    result = manage("check", tmp_path=tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr
