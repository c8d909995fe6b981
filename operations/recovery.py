"""The recovery pass: every live operation gets a worker again, soon.

It runs when a cluster's worker starts (operations/worker.py), every
TT_OPERATION_LEASE / 3 seconds in each worker, and once a minute as a django-q
schedule. It only dispatches: the claim that follows (operations/runner.py) is what
takes an operation over, conditionally on its attempt number.

- A running operation whose lease is void (not renewed for TT_OPERATION_LEASE
  seconds, handed back, or held by a process known dead) is dispatched again,
  at most once per lease period while its new task waits in the broker.
- A queued operation whose task may have been lost (taken by a cluster that
  died, or never enqueued because the web process died at commit) is
  dispatched again once it has waited a lease, then after ever longer waits
  (half its age), so a long queue is not flooded with duplicates. A duplicate
  costs one query: its claim finds the operation taken.
- When a worker starts, the tasks its predecessor had taken from the broker
  are gone with it: every live operation dispatched before the worker started
  and not held by a live worker goes again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from engines.errors import ErrorCode, TTError
from operations import lease
from operations.models import Operation
from operations.runner import dispatch, end_now

log = logging.getLogger(__name__)

# Never dispatch one operation twice within this many seconds.
REDISPATCH_FLOOR = timedelta(seconds=2)


def recover(now: datetime | None = None, *, started_at: datetime | None = None) -> int:
    """Dispatch every live operation that needs a worker; returns how many. `started_at`:
    the caller is a worker that started then, and this is its first pass."""
    now = now or timezone.now()
    dispatched = 0
    live = Operation.objects.filter(status__in=Operation.LIVE).only(
        "pk", "kind", "status", "attempt", "worker", "heartbeat_at", "dispatched_at", "created_at"
    )
    for op in live:
        if needs_worker(op, now, started_at=started_at) and _redispatch(op, now):
            dispatched += 1
    return dispatched


def needs_worker(op: Operation, now: datetime, *, started_at: datetime | None = None) -> bool:
    last = op.dispatched_at or op.created_at
    if op.status == Operation.Status.RUNNING and not lease.is_void(op, now):
        return False
    if started_at is not None:
        # Sent before this worker started: maybe to a cluster that has died since.
        # (Sent after: by the web, or by a sibling worker's first pass just now.)
        return last < started_at
    since = now - last
    if since < REDISPATCH_FLOOR:
        return False
    if op.status == Operation.Status.RUNNING:
        # A dead holder's operation goes at once; an expired one once per lease,
        # in case the task that would take it over waits in a long queue.
        known_dead = op.heartbeat_at is None or (bool(op.worker) and lease.holder_is_gone(op.worker))
        return known_dead or since >= lease.duration()
    return since >= max(lease.duration(), (now - op.created_at) / 2)


def _redispatch(op: Operation, now: datetime) -> bool:
    # Only one pass (of the several workers running one) dispatches it.
    if not Operation.objects.filter(
        pk=op.pk, status=op.status, attempt=op.attempt, dispatched_at=op.dispatched_at
    ).update(dispatched_at=now):
        return False
    log.warning("operation %s (%s, %s, attempt %s) dispatched again", op.pk, op.kind, op.status, op.attempt)
    dispatch(op.pk)
    return True


def is_stuck(op: Operation, now: datetime) -> bool:
    """No live worker holds it: running with a void lease, or queued for longer than a
    lease. What an operator looks at, and what a destroy may take over."""
    if op.status == Operation.Status.RUNNING:
        return lease.is_void(op, now)
    return op.status == Operation.Status.QUEUED and now - op.created_at >= lease.duration()


def stuck_q(now: datetime) -> Q:
    """is_stuck as a filter, for lists (a holder known dead shows once its lease runs out)."""
    cutoff = now - lease.duration()
    running = Q(status=Operation.Status.RUNNING)
    return (running & (Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff))) | Q(
        status=Operation.Status.QUEUED, created_at__lt=cutoff
    )


def take_over_stuck(env, *, why: str) -> list[Operation]:
    """End the Env's live operations that no live worker holds, without settling them
    (a destroy takes their VMs over itself); return the operations still live.

    Runs inside the destroy's transaction: only conditional updates, no engine calls.
    """
    now = timezone.now()
    still_live = []
    for op in Operation.objects.filter(env=env, status__in=Operation.LIVE):
        if is_stuck(op, now):
            end_now(op, TTError(f"taken over: {why}", code=ErrorCode.WORKER_LOST), settle=False)
        if op.is_live:
            still_live.append(op)
    return still_live
