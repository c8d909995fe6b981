"""Fixtures of the VM tests: a guest to go into (tests/vms/guest_support.py)."""

from __future__ import annotations

import pytest

from tests.vms.guest_support import FakeGuest, install, with_ways_in


@pytest.fixture
def guest(monkeypatch, template) -> FakeGuest:
    """The node's engine has exec, files and console, answered by a fake guest; the
    template declares exec and files."""
    with_ways_in(template)
    return install(monkeypatch, FakeGuest())
