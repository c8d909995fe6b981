"""Running one operation to its end, whatever dies under it.

    dispatch(id) ──► broker ──► execute(id)
                                  claim    one conditional UPDATE on (status, attempt, heartbeat):
                                           of two workers that race for it, exactly one wins
                                  lease    a thread renews heartbeat_at while the step runs
                                  run      the step its kind's app registered (registry.py); it
                                           resumes from what the engine really has
                                  settle   after a failure, or once the attempts ran out: nothing
                                           it claimed stays in a transitional state
                                  finish   fenced by the attempt: a worker that lost its lease
                                           changes nothing

A worker that dies leaves its lease to run out; operations/recovery.py dispatches the
operation again and the next claim takes it over as attempt n + 1. Attempt
TT_OPERATION_MAX_ATTEMPTS + 1 does not run the step: it settles and fails the
operation as `worker_lost`.

A leaf: it knows operations and the registry, never an app's services or steps. Each
app registers its kinds and steps (operations/registry.py) in its AppConfig.ready().
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce, Concat
from django.utils import timezone
from django_q.exceptions import TimeoutException

from audit import recording as audit
from engines.errors import ErrorCode, TTError
from operations import lease
from operations.lease import Lease, LeaseLost
from operations.models import Operation
from operations.registry import Progress, step_of

log = logging.getLogger(__name__)

# Told (operation id, final status) once an operation has ended, after that is committed:
# notifications' hook, registered in its AppConfig.ready(). A hook only enqueues work of
# its own; whatever it raises is logged and changes nothing about the operation.
FINISH_HOOKS: list[Callable[[int, str], None]] = []


def on_finish(hook: Callable[[int, str], None]) -> None:
    if hook not in FINISH_HOOKS:
        FINISH_HOOKS.append(hook)


def _announce(operation_id: int, status: str) -> None:
    def run() -> None:
        for hook in list(FINISH_HOOKS):
            try:
                hook(operation_id, status)
            except Exception:
                log.exception("operation %s: a finish hook failed", operation_id)

    transaction.on_commit(run)


# --- dispatch ---------------------------------------------------------------


def queue_of_operation(operation_id: int) -> str:
    """The cluster (queue) that runs the operation: its node's own, when the node has one,
    else the site's. Always named: django-q2 sends an unnamed task to the queue of the
    process that sends it, and a node's worker dispatches too (recovery, hand-back)."""
    node = (
        Operation.objects.filter(pk=operation_id, node__own_cluster=True)
        .values_list("node__name", flat=True).first()
    )
    return node or settings.Q_CLUSTER["name"]


def dispatch(operation_id: int) -> None:
    """Hand the operation to its cluster's queue (again). Duplicates are harmless: one
    claim wins."""
    from django_q.tasks import async_task

    Operation.objects.filter(pk=operation_id).update(dispatched_at=timezone.now())
    # django-q reads its own `sync` flag once at import; read ours per call so
    # tests (and TT_Q_SYNC deployments) run the task inline.
    async_task(
        "operations.tasks.run_operation",
        operation_id,
        task_name=f"operation-{operation_id}",
        cluster=queue_of_operation(operation_id),
        sync=bool(settings.Q_CLUSTER.get("sync")),
    )


# --- claim ------------------------------------------------------------------


def claim(operation_id: int, *, worker: str, now: datetime | None = None) -> Operation | None:
    """Take the operation for `worker` as its next attempt, or None when it is done or
    a live worker holds it. The UPDATE matches only the row as we read it, so of
    any number of claimants exactly one wins."""
    now = now or timezone.now()
    op = Operation.objects.filter(pk=operation_id).first()
    if op is None or not op.is_live:
        return None
    if op.status == Operation.Status.RUNNING and not lease.is_void(op, now):
        return None
    won = Operation.objects.filter(
        pk=op.pk, status=op.status, attempt=op.attempt, worker=op.worker, heartbeat_at=op.heartbeat_at
    ).update(
        status=Operation.Status.RUNNING, attempt=op.attempt + 1, worker=worker, heartbeat_at=now,
        started_at=Coalesce(F("started_at"), Value(now, output_field=DateTimeField())),
    )
    if not won:
        return None
    if op.attempt:
        log.warning("operation %s (%s): attempt %s takes over from %s", op.pk, op.kind,
                    op.attempt + 1, op.worker or "nobody")
    op.refresh_from_db()
    return op


# --- running ------------------------------------------------------------------


# The lease of the operation this process is running (operations/worker.py hands it
# back when the cluster is asked to stop).
current: Lease | None = None


def execute(operation_id: int) -> Operation | None:
    """Run one operation to a final status, or leave it to the worker that holds it."""
    global current
    op = claim(operation_id, worker=lease.identity())
    if op is None:
        return Operation.objects.filter(pk=operation_id).first()
    with Lease(op) as held:
        current = held
        try:
            _run_attempt(op, held)
        except LeaseLost:
            log.warning("operation %s: lease lost; the worker that took it over finishes it", op.pk)
        finally:
            current = None
    op.refresh_from_db()
    return op


def _run_attempt(op: Operation, held: Lease) -> None:
    if op.attempt > settings.TT_OPERATION_MAX_ATTEMPTS:
        conclude(op, held, TTError(
            f"no worker finished it in {op.attempt - 1} attempts (each one's worker stopped "
            f"renewing its lease)", code=ErrorCode.WORKER_LOST,
        ))
        return
    try:
        step_of(op).run(op, _progress(op, held))
    except LeaseLost:
        raise
    except TTError as exc:
        conclude(op, held, exc)
    except TimeoutException as exc:
        # django-q's task time limit (SIGALRM): record it, then let django-q
        # replace this worker as it does after a timeout.
        conclude(op, held, TTError(f"ran past TT_TASK_TIMEOUT: {exc}", code=ErrorCode.TIMEOUT))
        raise
    except Exception as exc:
        log.exception("operation %s (%s) crashed", op.pk, op.kind)
        conclude(op, held, TTError(f"{exc.__class__.__name__}: {exc}", code=ErrorCode.INTERNAL))
    else:
        finish(held)


def _progress(op: Operation, held: Lease) -> Progress:
    def progress(percent: int, message: str) -> None:
        held.check()
        stamp = timezone.now().strftime("%H:%M:%S")
        if not held.mine().update(
            progress=max(0, min(100, percent)), log=Concat(F("log"), Value(f"{stamp} {message}\n"))
        ):
            held.lost.set()
            held.check()

    return progress


def conclude(op: Operation, held: Lease, error: TTError) -> None:
    """Settle what the operation claimed, then record the failure."""
    held.check()
    try:
        step_of(op).settle(op)
    except Exception:
        log.exception("could not settle what operation %s (%s) claimed", op.pk, op.kind)
    finish(held, error=error)


def finish(held: Lease, *, error: TTError | None = None) -> bool:
    """The final status, written only while `held` still holds the operation."""
    fields: dict = {"finished_at": timezone.now()}
    if error is None:
        fields.update(status=Operation.Status.SUCCEEDED, progress=100)
    else:
        fields.update(
            status=Operation.Status.FAILED,
            error_code=str(error.code),
            error_message=str(error)[:4000],
            log=Concat(F("log"), Value(f"failed: {error.code}: {error}\n")),
        )
    done = bool(held.mine().update(**fields))
    if done:
        _announce(held.op_id, fields["status"])
        if error is not None:
            _audit_failure(held.op_id, error)
    return done


def _audit_failure(operation_id: int, error: TTError) -> None:
    """An operation that failed in its task is an audit event of its own, by the system
    (the worker), `failed` with the step's stable code: the request's event said `ok`
    when the request was taken (docs/guide/audit.md)."""
    try:
        op = Operation.objects.select_related("env", "vm__env", "snapshot__vm__env", "requested_by").get(
            pk=operation_id)
        audit.record(op.kind.replace("_", ".", 1), by=None, on=op, result=audit.FAILED, code=str(error.code),
                     detail={"operation": op.pk,
                             "requested_by": op.requested_by.get_username() if op.requested_by else ""})
    except Exception:  # the audit never changes how an operation ends
        log.exception("operation %s: could not record its failure in the audit log", operation_id)


# --- ending one from outside ------------------------------------------------------


def end_now(op: Operation, error: TTError, *, settle: bool = True) -> bool:
    """Take the operation over (whoever holds it) and fail it with `error`, settling what
    it claimed first unless the caller takes those claims over itself. False when it had
    already ended. Its old worker, if alive, is fenced out: its next write matches nothing."""
    while True:
        op.refresh_from_db()
        if not op.is_live:
            return False
        now = timezone.now()
        taken = Operation.objects.filter(
            pk=op.pk, status=op.status, attempt=op.attempt, heartbeat_at=op.heartbeat_at
        ).update(
            status=Operation.Status.RUNNING, attempt=op.attempt + 1, worker=lease.identity(),
            heartbeat_at=now,
        )
        if taken:
            break
    op.refresh_from_db()
    held = Lease(op)  # never entered: no renewals, only the fenced writes
    if settle:
        conclude(op, held, error)
    else:
        finish(held, error=error)
    op.refresh_from_db()
    return True


def hand_back(held: Lease) -> bool:
    """Give the lease up now so the next claim takes the operation at once (the
    cluster is stopping and this worker will not finish it)."""
    given = held.mine().update(worker="", heartbeat_at=None)
    if given:
        dispatch(held.op_id)
    return bool(given)
