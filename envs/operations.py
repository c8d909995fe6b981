"""Recording operations, enqueueing their tasks, and running them to a final status.

A service writes the Operation row in its own transaction and enqueues the task
on commit; the worker claims it, calls the registered step with a progress
callback, and records success or the error's stable code and message.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from django.db import IntegrityError, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from envs.models import Env, Operation
from ttportal.errors import ErrorCode, TTError

log = logging.getLogger(__name__)

Step = Callable[[Operation, Callable[[int, str], None]], None]
STEPS: dict[str, Step] = {}


def step_for(*kinds: str) -> Callable[[Step], Step]:
    """Register the function that does the engine work for these operation kinds."""

    def register(func: Step) -> Step:
        for kind in kinds:
            STEPS[kind] = func
        return func

    return register


def record(
    kind: str,
    *,
    env: Env,
    by,
    vm=None,
    snapshot=None,
    target: str = "",
    params: dict | None = None,
    idempotency_key: str = "",
    run: bool = True,
    status: str = Operation.Status.QUEUED,
    error: TTError | None = None,
) -> Operation:
    """Write the operation (inside the caller's transaction) and enqueue it on commit.

    With `run=False` and a final `status` it is a record of something already
    done (or found), with `error` for a failure.
    """
    op = Operation.objects.create(
        kind=kind,
        env=env,
        vm=vm,
        snapshot=snapshot,
        target=target or _describe(env, vm, snapshot),
        params=params or {},
        requested_by=by,
        idempotency_key=idempotency_key or "",
        status=status,
        error_code=str(error.code) if error else "",
        error_message=error.message if error else "",
    )
    if status in Operation.DONE:
        Operation.objects.filter(pk=op.pk).update(
            started_at=op.created_at, finished_at=op.created_at, progress=100
        )
        op.refresh_from_db()
    if run:
        transaction.on_commit(lambda: enqueue(op.pk))
    return op


def _describe(env: Env, vm, snapshot) -> str:
    if snapshot is not None:
        return f"{env.name}/{snapshot.vm.name}@{snapshot.name}"
    if vm is not None:
        return f"{env.name}/{vm.name}"
    return env.name


def enqueue(operation_id: int) -> None:
    from django.conf import settings
    from django_q.tasks import async_task

    # django-q reads its own `sync` flag once at import; read ours per call so
    # tests (and TT_Q_SYNC deployments) run the task inline.
    async_task(
        "envs.tasks.run_operation",
        operation_id,
        task_name=f"operation-{operation_id}",
        sync=bool(settings.Q_CLUSTER.get("sync")),
    )


def idempotent(service: Callable[..., Operation]) -> Callable[..., Operation]:
    """Same key from the same user returns the first operation instead of acting twice.

    The service runs in its own transaction; if a concurrent request with the
    same key wins the race, ours rolls back whole and we return theirs.
    """

    @functools.wraps(service)
    def wrapper(*args, by, idempotency_key: str = "", **kwargs) -> Operation:
        key = (idempotency_key or "").strip()
        if key:
            if len(key) > 128:
                from ttportal.errors import InvalidInput

                raise InvalidInput("idempotency_key", "must be at most 128 characters")
            existing = _by_key(by, key)
            if existing is not None:
                return existing
        try:
            with transaction.atomic():
                return service(*args, by=by, idempotency_key=key, **kwargs)
        except IntegrityError:
            existing = _by_key(by, key) if key else None
            if existing is not None:
                return existing
            raise

    return wrapper


def _by_key(user, key: str) -> Operation | None:
    if user is None:
        return None
    return Operation.objects.filter(requested_by=user, idempotency_key=key).first()


def sweep(due_ids, expire_one, now, limit: int) -> list[Operation]:
    """A periodic sweep: one item per step, each step re-checking that its item is still due."""
    ops = []
    for item_id in list(due_ids[:limit]):
        op = expire_one(item_id, now=now)
        if op is not None:
            ops.append(op)
    return ops


# --- running ---------------------------------------------------------------


def _progress_writer(op_id: int) -> Callable[[int, str], None]:
    def progress(percent: int, message: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        Operation.objects.filter(pk=op_id).update(
            progress=max(0, min(100, percent)),
            log=Concat(F("log"), Value(f"{stamp} {message}\n")),
        )

    return progress


def execute(operation_id: int) -> Operation | None:
    """Run one operation to a final status. Safe to call twice: finished work is not redone."""
    _load_steps()
    op = Operation.objects.filter(pk=operation_id).first()
    if op is None or op.is_done:
        return op
    now = timezone.now()
    Operation.objects.filter(pk=op.pk, status=Operation.Status.QUEUED).update(
        status=Operation.Status.RUNNING, started_at=now
    )
    op.refresh_from_db()
    progress = _progress_writer(op.pk)
    step = STEPS.get(op.kind)
    try:
        if step is None:
            raise TTError(f"no step registered for {op.kind}", code=ErrorCode.INTERNAL)
        step(op, progress)
    except TTError as exc:
        finish(op, error=exc)
        _settle_failed(op)
    except Exception as exc:
        log.exception("operation %s (%s) crashed", op.pk, op.kind)
        finish(op, error=TTError(f"{exc.__class__.__name__}: {exc}", code=ErrorCode.INTERNAL))
        _settle_failed(op)
    else:
        finish(op)
    op.refresh_from_db()
    return op


def _settle_failed(op: Operation) -> None:
    from vms.services import settle_failed

    try:
        settle_failed(op)
    except Exception:
        log.exception("could not settle what operation %s (%s) claimed", op.pk, op.kind)


def finish(op: Operation, *, error: TTError | None = None) -> None:
    fields = {"finished_at": timezone.now()}
    if error is None:
        fields.update(status=Operation.Status.SUCCEEDED, progress=100)
    else:
        fields.update(
            status=Operation.Status.FAILED,
            error_code=str(error.code),
            error_message=str(error)[:4000],
            log=Concat(F("log"), Value(f"failed: {error.code}: {error}\n")),
        )
    Operation.objects.filter(pk=op.pk).update(**fields)


def _load_steps() -> None:
    # Steps register themselves when their services module is imported.
    import envs.services  # noqa: F401
    import vms.services  # noqa: F401
