"""Every test here drives Chromium: marked `browser` by where it lives, as tests/integration's
are marked `integration`, so `-m "not browser"` (the unit loop, ./tt.sh test --unit) never
needs a browser, whatever a new module forgets to mark."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.browser)
