"""What runs in the task cluster beside the tasks: each worker's keeper thread, and a clean stop.

The keeper thread starts with its worker process (django-q's post_spawn
signal): it runs the recovery pass at once (the worker may replace one that
died with operations in hand) and then every TT_OPERATION_LEASE / 3 seconds.
Every TT_NODE_BEAT seconds it runs the beats an app registered (`on_beat`): the
fleet's, which in a node's own cluster beats for that node, and in the site's
cluster for the nodes the site serves, then marks late nodes down.

A clean stop (`manage.py tt_qcluster`, SIGTERM or Ctrl-C): the cluster process,
the only one of the cluster that acts on those signals, raises a flag every
worker sees. From then on no worker starts another operation (it dispatches it
again for the next cluster and moves on), and the one in hand (any task in hand)
gets TT_WORKER_STOP_TIMEOUT seconds to finish. Past that, the keeper hands its
lease back, so the next claim takes it over at once, and ends the worker
process: nothing is stranded and nothing runs twice.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.utils import timezone

from operations import recovery, runner

log = logging.getLogger(__name__)

# Shared with the worker processes, which the cluster process forks after
# creating them (prepare_stop_flag); None outside tt_qcluster.
_stop_at = None


def prepare_stop_flag() -> None:
    """In the cluster process, before it forks its workers."""
    global _stop_at
    # Without a lock: one writer (the cluster process, from its signal handler), and a
    # reader killed while holding a shared lock would leave that writer waiting for ever.
    _stop_at = multiprocessing.Value("d", 0.0, lock=False)


def request_stop(timeout: float) -> None:
    """In the cluster process, on SIGTERM/SIGINT: workers get `timeout` seconds."""
    if _stop_at is not None and not _stop_at.value:
        _stop_at.value = time.time() + timeout
        log.info("stopping: the operations in hand get %s s to finish", timeout)


def stop_requested() -> bool:
    return _stop_at is not None and _stop_at.value > 0


def _past_stop_deadline() -> bool:
    return stop_requested() and time.time() >= _stop_at.value


_keeper: threading.Thread | None = None


def on_worker_spawn(sender=None, **kwargs) -> None:
    """django-q's post_spawn, in each new worker process of a cluster. django-q also
    sends it when a task runs inline (sync mode), in the calling process: no keeper there."""
    global _keeper
    if multiprocessing.current_process().name == "MainProcess" or _keeper is not None:
        return
    _keeper = threading.Thread(target=run_keeper, name="tt-keeper", daemon=True)
    _keeper.start()


def cluster_name() -> str:
    """The queue this process's cluster serves: the site's, or a node's."""
    from django_q.conf import Conf

    return Conf.CLUSTER_NAME


# Called with this process's cluster name every TT_NODE_BEAT seconds, by the keeper.
BEATS: list[Callable[[str], object]] = []


def on_beat(beat_of: Callable[[str], object]) -> None:
    """From an AppConfig.ready(): run `beat_of(cluster name)` on every beat."""
    if beat_of not in BEATS:
        BEATS.append(beat_of)


# Started once in the cluster's main process, as it starts (tt_qcluster): services that
# live as long as the cluster, beside its workers (the waker: envs/sleep.py).
CLUSTER_SERVICES: list[Callable[[str], object]] = []


def on_cluster_start(start: Callable[[str], object]) -> None:
    """From an AppConfig.ready(): run `start(cluster name)` when a task cluster starts."""
    if start not in CLUSTER_SERVICES:
        CLUSTER_SERVICES.append(start)


def start_cluster_services() -> None:
    name = cluster_name()
    for start in list(CLUSTER_SERVICES):
        start(name)


def beat_this_cluster() -> None:
    """One beat of this cluster (see the module's docstring).

    The node part of the worker: it belongs with nodes (and the beat with vms, which
    counts what a node has free); it stays here until the worker can be handed jobs to
    keep by the apps above it, so that the worker does not import them."""
    name = cluster_name()
    for beat_of in list(BEATS):
        beat_of(name)


def run_keeper() -> None:
    """Recover operations now and every lease / 3 s, beat every TT_NODE_BEAT s; enforce
    the stop deadline."""
    period = settings.TT_OPERATION_LEASE / 3
    next_pass = next_beat = 0.0
    started_at = timezone.now()
    while True:
        if _past_stop_deadline():
            _give_up_and_exit()
        if time.monotonic() >= next_beat and not stop_requested():
            try:
                beat_this_cluster()
            except Exception:
                log.exception("the beat failed; trying again in %s s", settings.TT_NODE_BEAT)
            finally:
                connection.close()
            next_beat = time.monotonic() + settings.TT_NODE_BEAT
        if time.monotonic() >= next_pass and not stop_requested():
            try:
                recovery.recover(started_at=started_at)
                started_at = None
            except Exception:
                log.exception("the recovery pass failed; trying again in %s s", period)
            finally:
                connection.close()
            next_pass = time.monotonic() + period
        time.sleep(0.2)


def _give_up_and_exit() -> None:
    held = runner.current
    if held is not None:
        try:
            runner.hand_back(held)
            log.warning("operation %s did not finish within TT_WORKER_STOP_TIMEOUT; handed back",
                        held.op_id)
        except Exception:  # its lease runs out instead
            log.exception("could not hand operation %s back", held.op_id)
    # The operation's step cannot be interrupted safely from here; this worker
    # ends now and the next claim resumes from what the engine has.
    os._exit(0)
