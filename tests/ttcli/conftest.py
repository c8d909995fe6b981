"""The CLI's tests: `tt` run in-process by Typer's CliRunner, its config in a temporary
directory, never the user's."""

from __future__ import annotations

import importlib

import pytest
from typer.testing import CliRunner


@pytest.fixture(autouse=True)
def tt_config(tmp_path, monkeypatch):
    """A config directory of the test's own; no TT_URL/TT_TOKEN from the environment."""
    directory = tmp_path / "tt-config"
    monkeypatch.setenv("TT_CONFIG_DIR", str(directory))
    monkeypatch.delenv("TT_URL", raising=False)
    monkeypatch.delenv("TT_TOKEN", raising=False)
    return directory


@pytest.fixture
def tt():
    """tt(*args, input=None) -> the CliRunner result (exit_code, stdout, stderr)."""
    from ttcli.main import app

    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, list(args), input=input, catch_exceptions=False)

    return run


@pytest.fixture
def envfile_package():
    """The Env file parser the CLI checks files with (envfile/)."""
    return importlib.import_module("envfile")
