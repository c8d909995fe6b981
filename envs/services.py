"""Env actions. Every interface (portal, API, admin, tasks) calls these.

See vms/services.py for the pattern: validate and claim at request time,
engine work in registered steps, no transaction held across engine calls.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from envs import lease, policy, recovery, runner
from envs.models import Env, Operation
from envs.operations import idempotent, record, sweep
from ttportal.errors import ErrorCode, IllegalState, InvalidInput, TTError
from vms import state
from vms.models import Vm
from vms.services import build_vms, claim_for_destroy
from vms.specs import NewVm, check_name

K = Operation.Kind


def _end_from(now: datetime, *, lifetime=None, end_at=None, start_at: datetime) -> datetime:
    """Validate a requested end: after now, at most start + TT_MAX_ENV_LIFETIME."""
    if end_at is None:
        if lifetime in (None, ""):
            lifetime = settings.TT_DEFAULT_ENV_LIFETIME
        if isinstance(lifetime, timedelta):
            lifetime = int(lifetime.total_seconds())
        try:
            seconds = int(lifetime)
        except (TypeError, ValueError):
            raise InvalidInput("lifetime", "must be a number of seconds") from None
        if seconds <= 0:
            raise InvalidInput("lifetime", "must be a positive number of seconds")
        end_at = now + timedelta(seconds=seconds)
    if not isinstance(end_at, datetime) or timezone.is_naive(end_at):
        raise InvalidInput("end_at", "must be a timezone-aware date and time")
    field = "end_at" if lifetime is None else "lifetime"
    if end_at <= now:
        raise InvalidInput(field, "must be in the future")
    limit = start_at + timedelta(seconds=settings.TT_MAX_ENV_LIFETIME)
    if end_at > limit:
        raise InvalidInput(
            field, f"must not be past start + {settings.TT_MAX_ENV_LIFETIME} s ({limit.isoformat()})"
        )
    return end_at


@idempotent
def env_create(
    *, owner, name: str, vms: list[NewVm], by, lifetime=None, end_at=None,
    deny_outgoing: bool = False, idempotency_key: str = "",
) -> Operation:
    """A new Env with its VMs; a task creates and boots them. Returns the operation (op.env)."""
    if by is not None and by.pk != owner.pk and not by.is_staff:
        raise policy.Forbidden("only staff may create an Env for another user")
    check_name(name, "name")
    if Env.objects.live().filter(owner=owner, name=name).exists():
        raise InvalidInput("name", f"you already have a live Env named {name}")
    if not isinstance(vms, list | tuple) or not vms:
        raise InvalidInput("vms", "must list at least one VM")
    now = timezone.now()
    env = Env.objects.create(
        owner=owner, name=name, start_at=now,
        end_at=_end_from(now, lifetime=lifetime, end_at=end_at, start_at=now),
        deny_outgoing=bool(deny_outgoing), last_mgmt_at=now,
    )
    created = build_vms(env, list(vms))
    return record(K.ENV_CREATE, env=env, by=by, idempotency_key=idempotency_key,
                  params={"vm_ids": [vm.pk for vm in created], "start": True})



@idempotent
def env_extend(
    *, env: Env, by, end_at=None, lifetime=None, extend_by: timedelta | None = None,
    idempotency_key: str = "",
) -> Operation:
    """Move the end of the Env: never before now, never past start + max lifetime.

    `lifetime` counts from now ("2 more hours from now"); `extend_by` from the
    current end, or from now when the end has passed but the sweep has not run.
    """
    policy.check_can_manage(by, env)
    env = Env.objects.select_for_update().get(pk=env.pk)
    policy.check_live(env)
    now = timezone.now()
    if extend_by is not None:
        end_at = max(env.end_at, now) + extend_by
    if end_at is None and lifetime in (None, ""):
        raise InvalidInput("end_at", "give end_at or lifetime")
    new_end = _end_from(now, lifetime=lifetime, end_at=end_at, start_at=env.start_at)
    old_end = env.end_at
    Env.objects.filter(pk=env.pk).update(end_at=new_end)
    env.end_at = new_end
    return record(K.ENV_EXTEND, env=env, by=by, idempotency_key=idempotency_key, run=False,
                  status=Operation.Status.SUCCEEDED,
                  params={"from": old_end.isoformat(), "to": new_end.isoformat()})


def _claim_all(env: Env, action: str) -> list[int]:
    """Claim every VM of the Env that can take `action`; the rest are left as they are."""
    claimed = []
    for vm in env.vms.live().order_by("pk"):
        if state.can(vm, action):
            try:
                state.claim(vm, action)
            except IllegalState:
                continue
            claimed.append(vm.pk)
    return claimed


def _env_power(env: Env, action: str, kind: str, by, idempotency_key: str) -> Operation:
    policy.check_can_manage(by, env)
    env = Env.objects.select_for_update().get(pk=env.pk)
    policy.check_live(env)
    vm_ids = _claim_all(env, action)
    if not vm_ids:
        busy = [vm.name for vm in env.vms.live() if vm.status not in state.STABLE | {Vm.Status.ERROR}]
        if busy:
            raise IllegalState(f"VMs still busy: {', '.join(busy)}; retry when their operations finish")
    else:  # a no-op (every VM already there) costs no cooldown
        policy.claim_mgmt_slot(env, timezone.now(), by=by)
    Env.objects.filter(pk=env.pk).update(is_stopped=action == "stop")
    return record(kind, env=env, by=by, idempotency_key=idempotency_key, params={"vm_ids": vm_ids})


@idempotent
def env_stop(*, env: Env, by, idempotency_key: str = "") -> Operation:
    """Stop every running VM of the Env (the seed's is_stopped)."""
    return _env_power(env, "stop", K.ENV_STOP, by, idempotency_key)


@idempotent
def env_start(*, env: Env, by, idempotency_key: str = "") -> Operation:
    return _env_power(env, "start", K.ENV_START, by, idempotency_key)


@idempotent
def env_set_deny_outgoing(*, env: Env, deny: bool, by, idempotency_key: str = "") -> Operation:
    """Cut every VM of the Env off from everything beyond the node network (or allow it again)."""
    policy.check_can_manage(by, env)
    if not isinstance(deny, bool):
        raise InvalidInput("deny_outgoing", "must be true or false")
    env = Env.objects.select_for_update().get(pk=env.pk)
    policy.check_live(env)
    previous = env.deny_outgoing
    vms = list(env.vms.live().exclude(status=Vm.Status.CREATING))
    for vm in vms:
        state.claim_network(vm)  # the whole change or nothing (the transaction rolls back)
    Env.objects.filter(pk=env.pk).update(deny_outgoing=deny)
    vm_ids = [vm.pk for vm in vms]
    return record(K.ENV_DENY_OUTGOING, env=env, by=by, idempotency_key=idempotency_key,
                  params={"deny": deny, "previous": previous, "vm_ids": vm_ids})


@idempotent
def env_destroy(*, env: Env, by, idempotency_key: str = "", kind: str = K.ENV_DESTROY) -> Operation:
    """Destroy every VM and release their ports; the Env row and its operations stay on record."""
    policy.check_can_manage(by, env)
    env = Env.objects.select_for_update().get(pk=env.pk)
    if env.status == Env.Status.DESTROYED:
        raise IllegalState(f"Env {env.name} is destroyed")
    policy.claim_mgmt_slot(env, timezone.now(), by=by)
    # A destroy left half-way (its worker lost) is taken over here, so an Env
    # still marked destroying may be destroyed again.
    vm_ids = claim_for_destroy(env, list(env.vms.live().order_by("pk")), by=by)
    Env.objects.filter(pk=env.pk).update(status=Env.Status.DESTROYING)
    return record(kind, env=env, by=by, idempotency_key=idempotency_key, params={"vm_ids": vm_ids})


def env_expire_due(now=None, limit: int = 100) -> list[Operation]:
    """Queue the destruction of Envs whose end has passed, one at a time."""
    now = now or timezone.now()
    due = Env.objects.filter(status=Env.Status.ACTIVE, end_at__lte=now).order_by("end_at")
    return sweep(due.values_list("pk", flat=True), env_expire_one, now, limit)


def env_expire_one(env_id: int, *, now=None) -> Operation | None:
    """One step of the sweep: expire this Env if it is still live and past its end."""
    now = now or timezone.now()
    env = Env.objects.filter(pk=env_id, status=Env.Status.ACTIVE, end_at__lte=now).first()
    if env is None:
        return None
    try:
        return env_destroy(env=env, by=None, kind=K.ENV_EXPIRE)
    except IllegalState:
        return None  # a VM is mid-operation; the next sweep tries again


# --- operators: stuck operations ------------------------------------------------------------


def operation_retry(*, op: Operation, by) -> Operation:
    """Hand a stuck operation to a worker now instead of at the next recovery pass."""
    policy.check_staff(by)
    op.refresh_from_db()
    if not op.is_live:
        raise IllegalState(f"operation {op.pk} has ended ({op.status})")
    now = timezone.now()
    if not recovery.is_stuck(op, now):
        raise IllegalState(
            f"operation {op.pk} is held by {lease.describe(op.worker) or 'its worker'}, lease renewed "
            f"{int((now - (op.heartbeat_at or now)).total_seconds())} s ago; it is not stuck"
        )
    runner.dispatch(op.pk)
    return op


def operation_fail(*, op: Operation, by) -> Operation:
    """End a live operation now as failed (`cancelled`), settling what it claimed.

    Meant for a stuck one; on one a live worker still runs, that worker is fenced
    out (its next write matches nothing) and whatever its engine call still
    finishes is left to reconciliation.
    """
    policy.check_staff(by)
    error = TTError(f"ended by {by.get_username()} from the admin", code=ErrorCode.CANCELLED)
    if not runner.end_now(op, error):
        raise IllegalState(f"operation {op.pk} has ended ({op.status})")
    return op
