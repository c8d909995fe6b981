"""Recording operations on the request side: the row, its task on commit, idempotency
keys, and the periodic sweeps' one-item-at-a-time loop.

The worker side (claim, lease, step, settle, finish) is operations/runner.py. It names no
app above it: the Env, VM, snapshot and node come in as objects, their models by relation.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction

from audit.recording import already_recorded
from operations import registry
from operations.models import Operation
from operations.runner import dispatch
from ttportal import ratelimit
from ttportal.errors import IdempotencyKeyReused, InvalidInput, NodeDown, RateLimited, TTError
from ttportal.limits import IDEMPOTENCY_KEY_MAX


def record(
    kind: str,
    *,
    env,
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

    An `idempotency_key` handed on from the `idempotent` wrapper is an IdempotencyKey: the
    fingerprint of its request is stored with it, so a later request with the same key can
    be told apart (same request: the first operation; another: refused).

    The operation runs on its node's task cluster (runner.dispatch): its VM's node, or
    the node of most of its Env's VMs. An operation to run on a node that is down is
    refused (node_down), inside the caller's transaction, so nothing it claimed stays;
    so is one past its requester's cap on queued operations (`check_queue`).
    """
    node = _node_of(env, vm, snapshot)
    if run and node is not None and node.down_since is not None:
        raise NodeDown(f"node {node.name} is down since {node.down_since:%Y-%m-%d %H:%M:%S} UTC (its task "
                       f"cluster stopped beating): nothing can be done there until it beats again")
    if run and kind not in registry.kinds_tagged(registry.UNCAPPED):
        check_queue(by)
    fingerprint = idempotency_key.fingerprint if isinstance(idempotency_key, IdempotencyKey) else ""
    op = Operation.objects.create(
        node=node,
        kind=kind,
        env=env,
        vm=vm,
        snapshot=snapshot,
        target=target or _describe(env, vm, snapshot),
        params=params or {},
        requested_by=by,
        idempotency_key=str(idempotency_key or ""),
        request_fingerprint=fingerprint if idempotency_key else "",
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


# Destroying gives back what the user holds: never held up by the cap (each app tags
# its kinds registry.UNCAPPED).
# What a refusal by the cap suggests waiting: operations take seconds to minutes.
QUEUE_RETRY_AFTER = 10


def check_queue(by) -> None:
    """Refuse one more operation from a user who has TT_MAX_QUEUED_OPERATIONS_PER_USER queued
    or running (staff and tasks are not capped), so one user cannot fill the workers' queue.
    Counted without a lock: concurrent requests of one user may pass it by a few."""
    most = settings.TT_MAX_QUEUED_OPERATIONS_PER_USER
    if not most or not ratelimit.counted(by):
        return
    live = Operation.objects.filter(requested_by=by, status__in=Operation.LIVE).count()
    if live >= most:
        raise RateLimited(
            f"you have {live} operations queued or running, the most one may have at once "
            f"({most}); retry when some have finished",
            limit_name="queued_operations", limit=most, retry_after=QUEUE_RETRY_AFTER,
        )


def _node_of(env, vm, snapshot):
    """The node whose cluster runs the operation: its VM's, or the node of most of the
    Env's live VMs (an Env spans nodes only when no node had room for all of them)."""
    if snapshot is not None and vm is None:
        vm = snapshot.vm
    if vm is not None:
        return vm.node
    if env is None or env.pk is None:
        return None
    busiest = env.vms.live().values("node").annotate(n=models.Count("id")).order_by("-n", "node").first()
    node_model = Operation._meta.get_field("node").related_model
    return node_model.objects.get(pk=busiest["node"]) if busiest else None


def _describe(env, vm, snapshot) -> str:
    if snapshot is not None:
        return f"{env.name}/{snapshot.vm.name}@{snapshot.name}"
    if vm is not None:
        return f"{env.name}/{vm.name}"
    return env.name


class IdempotencyKey(str):
    """A request's Idempotency-Key as the `idempotent` wrapper hands it to its service,
    carrying the fingerprint of that request for `record` to store. A str, so the
    services pass it on as the key they always took."""

    fingerprint: str

    def __new__(cls, key: str, fingerprint: str) -> IdempotencyKey:
        made = super().__new__(cls, key)
        made.fingerprint = fingerprint
        return made


def idempotent(service: Callable[..., Operation | None]) -> Callable[..., Operation | None]:
    """The IETF Idempotency-Key rule, for every interface: the same key from the same user
    with the same request returns the first operation instead of acting twice; the same
    key with a different request (another action, object or argument) is refused.

    The service runs in its own transaction; if a concurrent request with the
    same key wins the race, ours rolls back whole and we answer as above.
    A refused request records nothing, so its key stays free for a corrected retry. A
    replay is no new action: the audit log keeps the first request's event only.
    """

    @functools.wraps(service)
    def wrapper(*args, by, idempotency_key: str = "", **kwargs) -> Operation | None:
        key = (idempotency_key or "").strip()
        fingerprint = ""
        if key:
            if len(key) > IDEMPOTENCY_KEY_MAX:
                raise InvalidInput("Idempotency-Key", f"must be at most {IDEMPOTENCY_KEY_MAX} characters")
            fingerprint = request_fingerprint(service.__name__, args, kwargs)
            existing = _by_key(by, key, fingerprint)
            if existing is not None:
                return already_recorded(existing)
        try:
            with transaction.atomic():
                return service(*args, by=by, idempotency_key=IdempotencyKey(key, fingerprint), **kwargs)
        except IntegrityError:
            existing = _by_key(by, key, fingerprint) if key else None
            if existing is not None:
                return already_recorded(existing)
            raise

    return wrapper


def request_fingerprint(action: str, args, kwargs) -> str:
    """A digest of what a keyed request asks: the service, its objects (by id) and its
    arguments, normalised (so the same body sent twice matches, key order aside)."""
    payload = json.dumps([action, list(args), kwargs], sort_keys=True, default=_plain, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _plain(value):
    if isinstance(value, models.Model):
        return f"{value._meta.label}:{value.pk}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=repr) if not isinstance(value, tuple) else list(value)
    return repr(value)


def _by_key(user, key: str, fingerprint: str) -> Operation | None:
    """The first operation of this key, if the request is the same; refused if it is not."""
    if user is None:
        return None
    first = Operation.objects.filter(requested_by=user, idempotency_key=key).first()
    # Operations keyed before fingerprints were kept have none: answered as before.
    if first is not None and first.request_fingerprint and first.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused()
    return first


def expire_each(due_ids, expire_one, now, limit: int) -> list[Operation]:
    """A periodic sweep: one item per step, each step re-checking that its item is still due."""
    ops = []
    for item_id in list(due_ids[:limit]):
        op = expire_one(item_id, now=now)
        if op is not None:
            ops.append(op)
    return ops
