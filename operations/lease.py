"""Who holds an operation, whether that worker still lives, and the heartbeat that says so.

A worker is named `host:pid/boot.pidns.start#queue`: the host and pid people read,
then what makes the name unique for ever (this boot of the kernel, the pid
namespace, the process's start time), then the task queue its cluster serves (the
site's, or a node's own), so an operation says which cluster ran it.
On the same host, in the same pid namespace, a worker whose process is gone (or
whose pid now belongs to another process) is known dead at once; anywhere else its
lease must run out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta
from functools import cache

from django.conf import settings
from django.db import connection
from django.utils import timezone

from operations.models import Operation

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker took this operation over: stop without touching it again."""


# --- identity ---------------------------------------------------------------


@cache
def _boot_and_pidns() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()[:8]
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # not Linux: only the lease's expiry tells a dead worker
        return "?.?"
    return f"{boot}.{pidns}"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or
    None when it is gone. A zombie is gone: killed, waiting only to be reaped (a
    worker whose parent died too waits for init, which may take its time)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: count from the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def identity(pid: int | None = None) -> str:
    """This process as a lease holder (a forked worker gets its own name)."""
    from django_q.conf import Conf

    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}/{_boot_and_pidns()}.{_start_time(pid) or '?'}#{Conf.CLUSTER_NAME}"


def queue_of_worker(worker: str) -> str:
    """The task queue of the cluster `worker` belongs to ("" for a name without one)."""
    return worker.rpartition("#")[2] if "#" in worker else ""


def holder_is_gone(worker: str) -> bool:
    """True only when `worker` ran on this host, this boot, this pid namespace, and its
    process is gone. Anything we cannot be sure about counts as alive."""
    try:
        where, fingerprint = worker.split("/", 1)
        host, pid = where.rsplit(":", 1)
        boot, pidns, start = fingerprint.partition("#")[0].split(".")
    except ValueError:
        return False
    if host != socket.gethostname() or f"{boot}.{pidns}" != _boot_and_pidns() or start == "?":
        return False
    return _start_time(int(pid)) != start


def describe(worker: str) -> str:
    """`host pid N (queue Q)` for people; the fingerprint is for the liveness check."""
    where = worker.split("/", 1)[0]
    host, _, pid = where.rpartition(":")
    queue = queue_of_worker(worker)
    shown = f"{host} pid {pid}" if host else where
    return f"{shown} (queue {queue})" if queue else shown


# --- the lease ----------------------------------------------------------------


def duration() -> timedelta:
    return timedelta(seconds=settings.TT_OPERATION_LEASE)


def renew_interval() -> float:
    # Six renewals per lease: a slow database or a busy host may miss a few.
    return settings.TT_OPERATION_LEASE / 6


def is_void(op: Operation, now: datetime) -> bool:
    """Nobody is really running `op`: it was never renewed, has run out, was handed
    back, or its holder is known dead."""
    if op.heartbeat_at is None or op.heartbeat_at < now - duration():
        return True
    return bool(op.worker) and holder_is_gone(op.worker)


class Lease:
    """Held while a step runs: a thread renews the heartbeat; `check()` raises once lost.

    Renewal is conditional on the attempt number: once another worker has taken
    the operation over, the renewal matches no row and the lease is lost.
    """

    def __init__(self, op: Operation):
        self.op_id = op.pk
        self.attempt = op.attempt
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{op.pk}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"operation {self.op_id} attempt {self.attempt} was taken over")

    def mine(self):
        """The operation's row, only while this lease holds it (for fenced updates)."""
        return Operation.objects.filter(
            pk=self.op_id, attempt=self.attempt, status=Operation.Status.RUNNING
        )

    def _renew(self) -> None:
        try:
            while not self._done.wait(renew_interval()):
                try:
                    # Never a lease its worker handed back (runner.hand_back): that would
                    # hide it from the next claim until it ran out.
                    renewed = self.mine().exclude(worker="").update(heartbeat_at=timezone.now())
                except Exception:  # the database may come back before the lease runs out
                    log.warning("could not renew the lease of operation %s", self.op_id, exc_info=True)
                    continue
                if not renewed:
                    log.warning("operation %s attempt %s was taken over", self.op_id, self.attempt)
                    self.lost.set()
                    return
        finally:
            connection.close()  # this thread's own connection
