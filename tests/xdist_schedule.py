"""How `pytest -n N` (pytest-xdist, as ./tt.sh test runs it) shares the tests among workers.

- Every real-guest test (tests/integration) goes to one worker, one after another, and first:
  they share the node, its bridge, its ports and its nftables tables, and a guest under QEMU's
  TCG takes a core of its own. They are the longest part of the suite, so they start at once.
- Every other test file goes whole to one worker, so that a module's shared world
  (tests/module_world.py) is built once.

xdist's own `--dist loadgroup` would do the first with a marker, but pytest-xdist 3.8 names
the group by rewriting `item._nodeid`, which pytest 9.2 no longer reads."""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadScopeScheduling

REAL_GUESTS = "tests/integration/"


def is_real_guest_test(nodeid: str) -> bool:
    return nodeid.startswith(REAL_GUESTS)


class RealGuestsTogether(LoadScopeScheduling):
    """xdist's scope scheduling, with the scopes above, handed out in collection order (the
    real-guest tests are put first there: see `real_guests_first`)."""

    def __init__(self, config: pytest.Config, log=None) -> None:
        super().__init__(config, log)
        # Not sorted by size: the order of the collection says which scope starts first.
        config.option.loadscopereorder = False

    def _split_scope(self, nodeid: str) -> str:
        if is_real_guest_test(nodeid):
            return REAL_GUESTS
        return nodeid.split("::", 1)[0]


def real_guests_first(items: list[pytest.Item]) -> None:
    """Move the real-guest tests to the front, each keeping its order (pytest-django's too)."""
    items.sort(key=lambda item: not is_real_guest_test(item.nodeid))
