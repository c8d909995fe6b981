"""django-q2 entry points of audit."""

from __future__ import annotations


def prune() -> int:
    from audit.prune import prune as run

    return run()
