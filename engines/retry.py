"""Bounded retries of engine calls that fail transiently and are safe to repeat.

Plain Python (no Django): drivers wrap one call each, never a whole flow, so only a
step that can be repeated as it is (writing the same file again, reading a state,
an idempotent libvirt call) is ever run twice. The last failure is raised unchanged
once the attempts are spent: the `fails_as(code)` around the call gives it its code, as
for any failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 3
DELAY_S = 0.2  # before the second attempt; doubled before each next one


def retry(call: Callable[[], T], *, transient: Callable[[BaseException], bool], what: str,
          attempts: int = ATTEMPTS, delay: float = DELAY_S,
          before_retry: Callable[[BaseException], None] | None = None,
          sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, run again (at most `attempts` times in all) while it raises an error
    `transient` says may pass; any other error, or the last one, is raised as it is.
    `before_retry(error)` runs before each new attempt instead of the plain wait (to
    reconnect, say); it may raise, which ends the retries."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts or not transient(exc):
                raise
            log.warning("%s failed (attempt %s of %s), retrying: %s", what, attempt, attempts, exc)
            if before_retry is not None:
                before_retry(exc)
            else:
                sleep(delay * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # the loop returns or raises
