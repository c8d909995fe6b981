"""Recording operations on the request side: the row, its task on commit, idempotency
keys, and the periodic sweeps' one-item-at-a-time loop.

The worker side (claim, lease, step, settle, finish) is envs/runner.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.db import IntegrityError, transaction

from envs.models import Env, Operation
from envs.runner import dispatch
from ttportal.errors import InvalidInput, TTError


def record(
    kind: str,
    *,
    env: Env | None,
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
    done (or found), with `error` for a failure. Only such a record may have no
    Env (drift on a node that no Env owns), and then it names its `target`.
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
        transaction.on_commit(lambda: dispatch(op.pk))
    return op


def _describe(env: Env, vm, snapshot) -> str:
    if snapshot is not None:
        return f"{env.name}/{snapshot.vm.name}@{snapshot.name}"
    if vm is not None:
        return f"{env.name}/{vm.name}"
    return env.name


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
