"""Asking nodes from a web process: bounded in time, reused for a few seconds.

A node's engine or firewall can hang (libvirt waits for a daemon to come back, a
Docker socket that does not answer, an nft that takes its time). A page, /readyz
or a Prometheus scrape must not: each call runs in a thread of its own, the caller
waits at most TT_NODE_PROBE_TIMEOUT seconds for it, and its outcome, answer or
failure, is reused for TT_NODE_PROBE_CACHE seconds in this process. A call still
running is never started twice: later callers wait for the same one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    ok: bool  # the call returned (False: it raised, or did not answer in time)
    value: Any = None
    error: str = ""  # why not, for logs: may name hosts and paths, never shown to anonymous users
    timed_out: bool = False


_lock = threading.Lock()
_answers: dict[Hashable, tuple[float, Outcome]] = {}
_running: dict[Hashable, Future] = {}


def _run(key: Hashable, call: Callable[[], Any], future: Future) -> None:
    try:
        outcome = Outcome(True, call())
    except Exception as exc:  # whatever goes wrong is the finding
        outcome = Outcome(False, error=f"{exc.__class__.__name__}: {exc}")
        log.warning("probe %s failed: %s", key, outcome.error)
    finally:
        connections.close_all()  # this thread's own, if the call used the database
    with _lock:
        _answers[key] = (time.monotonic(), outcome)
        _running.pop(key, None)
    future.set_result(outcome)


def ask_many(calls: dict[Hashable, Callable[[], Any]], *, timeout: float | None = None,
             ttl: float | None = None) -> dict[Hashable, Outcome]:
    """Run each call (keyed by what it asks, e.g. ("health", node.pk)) at once, and
    wait for them all together at most `timeout` seconds."""
    timeout = settings.TT_NODE_PROBE_TIMEOUT if timeout is None else timeout
    ttl = settings.TT_NODE_PROBE_CACHE if ttl is None else ttl
    now = time.monotonic()
    results: dict[Hashable, Outcome] = {}
    waiting: dict[Hashable, Future] = {}
    with _lock:
        for key, call in calls.items():
            answered = _answers.get(key)
            if answered is not None and now - answered[0] < ttl:
                results[key] = answered[1]
                continue
            future = _running.get(key)
            if future is None:
                future = _running[key] = Future()
                threading.Thread(target=_run, args=(key, call, future), daemon=True,
                                 name=f"probe-{key}").start()
            waiting[key] = future
    deadline = now + timeout
    for key, future in waiting.items():
        try:
            results[key] = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            results[key] = Outcome(False, error=f"no answer within {timeout} s", timed_out=True)
    return results


def ask(key: Hashable, call: Callable[[], Any], **kwargs) -> Outcome:
    return ask_many({key: call}, **kwargs)[key]


def forget() -> None:
    """Drop every reused answer (tests; a call still running finishes on its own)."""
    with _lock:
        _answers.clear()
