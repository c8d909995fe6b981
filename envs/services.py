"""Env actions. Every interface (portal, API, admin, tasks) calls these.

See vms/services.py for the pattern: validate and claim at request time,
engine work in registered steps, no transaction held across engine calls.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from accounts import quotas
from accounts.quotas import Usage
from audit.recording import audited
from envs import sleep
from envs.kinds import EnvKind
from envs.models import Env
from operations.models import Operation
from operations.recording import expire_each, idempotent, record
from ttportal import limits, ratelimit
from ttportal.errors import ConflictingInput, IllegalState, InvalidInput
from vms import policy, state, usage
from vms.models import Vm
from vms.new_vms import NewVm, check_name
from vms.services import check_vms, claim_for_destroy, insert_vms, ports_of
from vms.state import VmAction


def _end_from(
    now: datetime, *, start_at: datetime, lifetime=None, end_at=None, extend_by=None,
    current_end: datetime | None = None,
) -> datetime:
    """The end one of `lifetime` (seconds from now), `end_at` or `extend_by` (a timedelta
    from the current end, or from now if that has passed) asks for: after now, and at
    most start + TT_MAX_ENV_LIFETIME. A refusal names the parameter that was given.

    Every number is bounded before any arithmetic is done with it, so no input can
    overflow a date."""
    given = [name for name, value in (("end_at", end_at), ("lifetime", lifetime), ("extend_by", extend_by))
             if value is not None]
    if len(given) > 1:
        # Named on end_at: it is documented as "instead of lifetime", and a past end_at
        # with a lifetime is first of all an end_at that should not be there.
        raise InvalidInput(given[0], f"give {' or '.join(given)}, not both")
    longest = settings.TT_MAX_ENV_LIFETIME
    field = given[0] if given else "lifetime"
    if end_at is None:
        if extend_by is not None:
            seconds = extend_by.total_seconds() if isinstance(extend_by, timedelta) else None
            base = max(current_end or now, now)
        else:
            seconds = settings.TT_DEFAULT_ENV_LIFETIME if lifetime is None else lifetime
            base = now
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not (
            limits.LIFETIME_MIN <= seconds <= longest
        ):
            raise InvalidInput(field, limits.between(limits.LIFETIME_MIN, longest, "seconds"))
        end_at = base + timedelta(seconds=seconds)
    elif not isinstance(end_at, datetime) or timezone.is_naive(end_at):
        raise InvalidInput(field, "must be a date and time with a UTC offset")
    if end_at <= now:
        raise ConflictingInput(field, "must be in the future" if field == "end_at" else
                               "must end in the future")
    limit = start_at + timedelta(seconds=longest)
    if end_at > limit:
        raise ConflictingInput(
            field, f"must not end past the Env's start + {longest} s ({limit.isoformat()})"
        )
    return end_at


# env_create's idle_suspend when the request gives none: the site's default.
SITE_DEFAULT = "site default"


@audited("env.create")
@idempotent
def env_create(
    *, owner, name: str, vms: list[NewVm], by, lifetime=None, end_at=None,
    deny_outgoing: bool = False, idle_suspend=SITE_DEFAULT, ignore_quota: bool = False,
    idempotency_key: str = "",
) -> Operation:
    """A new Env with its VMs; a task creates and boots them. Returns the operation (op.env).

    Bound by the owner's quota (accounts/quotas.py: live Envs, VMs, vCPUs, memory, disk,
    forwarded ports, lifetime), also when staff ask for them, unless staff say `ignore_quota` (recorded in
    the operation's params). Without a lifetime or end, the Env gets the default lifetime,
    or the owner's longest lifetime if that is shorter. `idle_suspend`: minutes idle before
    it sleeps (envs/sleep.py), None never; not given, the site's TT_IDLE_SUSPEND_DEFAULT_MIN."""
    policy.check(by, "env_create", owner_id=owner.pk)  # for another user: staff with envs.add_env
    # The owner's row is locked first: one owner's creates are counted one at a time.
    allowed = usage.admit(owner, by=by, ignore_quota=ignore_quota)
    check_name(name, "name")
    idle = (sleep.default_idle_suspend() if idle_suspend == SITE_DEFAULT
            else sleep.check_idle_suspend(idle_suspend))
    if not isinstance(vms, list | tuple) or not vms:
        raise InvalidInput("vms", "must list at least one VM")
    now = timezone.now()
    # The default lifetime, no longer than the owner's longest (a 0 quota is refused below).
    if allowed is not None and lifetime is None and end_at is None and allowed["lifetime"]:
        lifetime = min(settings.TT_DEFAULT_ENV_LIFETIME, allowed["lifetime"])
    end = _end_from(now, lifetime=lifetime, end_at=end_at, start_at=now)
    if Env.objects.live().filter(owner=owner, name=name).exists():
        raise ConflictingInput("name", f"{owner.get_username()} already has a live Env named {name}")
    used = usage.usage_of(owner) if allowed is not None else None  # before this Env counts
    env = Env.objects.create(
        owner=owner, name=name, start_at=now, end_at=end,
        deny_outgoing=bool(deny_outgoing), last_mgmt_at=now, idle_suspend=idle,
    )
    checked = check_vms(env, list(vms))
    if allowed is not None:  # after the input's own checks: bad input is told as such
        quotas.check_lifetime(owner, allowed, current=0, wanted=_seconds(end - now))
        usage.check_adds(owner, allowed, Usage.of_vms([c.clean for c in checked], envs=1,
                                                      ports=ports_of(checked)), used=used)
    created = insert_vms(env, checked)
    params = {"vm_ids": [vm.pk for vm in created], "start": True}
    return record(EnvKind.ENV_CREATE, env=env, by=by, idempotency_key=idempotency_key,
                  params=_quota_noted(params, allowed))


def _seconds(delta: timedelta) -> int:
    """Whole seconds, rounded up: a quota is never passed by a fraction of one."""
    return math.ceil(delta.total_seconds())


def _quota_noted(params: dict, allowed) -> dict:
    """The operation's params, saying so when staff had the owner's quota ignored (audit)."""
    return {**params, "ignore_quota": True} if allowed is None else params


@audited("env.extend")
@idempotent
def env_extend(
    *, env: Env, by, end_at=None, lifetime=None, extend_by: timedelta | None = None,
    ignore_quota: bool = False, idempotency_key: str = "",
) -> Operation:
    """Move the end of the Env: never before now, never past start + max lifetime.

    `lifetime` counts from now ("2 more hours from now"); `extend_by` from the
    current end, or from now when the end has passed but the sweep has not run.
    A later end is bound by the owner's quota (the longest lifetime, from the Env's
    start, and the longest single extension), also for staff unless they say
    `ignore_quota` (recorded in the operation's params). How often one user may extend
    is bound too (TT_RATE_EXTEND).
    """
    policy.check_can_manage(by, env, "env_extend")
    if end_at is None and lifetime is None and extend_by is None:
        raise InvalidInput("end_at", "give end_at or lifetime")
    # No lock on the owner: these quotas bound this Env alone, whose row is locked below.
    allowed = usage.admit(env.owner, by=by, ignore_quota=ignore_quota, lock=False)
    env = Env.objects.select_for_update().get(pk=env.pk)
    policy.check_live(env)
    now = timezone.now()
    new_end = _end_from(now, lifetime=lifetime, end_at=end_at, extend_by=extend_by,
                        current_end=env.end_at, start_at=env.start_at)
    old_end = env.end_at
    if allowed is not None and new_end > old_end:  # an earlier end is never refused
        quotas.check_lifetime(env.owner, allowed, current=_seconds(old_end - env.start_at),
                              wanted=_seconds(new_end - env.start_at))
        quotas.check_extension(env.owner, allowed, _seconds(new_end - max(old_end, now)))
    ratelimit.take("extend", user=by)  # last: a request refused for its input is not counted
    Env.objects.filter(pk=env.pk).update(end_at=new_end)
    env.end_at = new_end
    return record(EnvKind.ENV_EXTEND, env=env, by=by, idempotency_key=idempotency_key, run=False,
                  status=Operation.Status.SUCCEEDED,
                  params=_quota_noted({"from": old_end.isoformat(), "to": new_end.isoformat()}, allowed))


def _env_power(env: Env, action: VmAction, kind: str, by, idempotency_key: str) -> Operation | None:
    """Claim every VM of the Env that can take `action`. None when there is nothing to do
    (every VM is there already): no operation is recorded and no cooldown is used."""
    policy.check_can_manage(by, env, f"env_{action}")
    env = Env.objects.select_for_update().get(pk=env.pk)
    policy.check_live(env)
    vms = list(env.vms.live().order_by("pk"))
    busy = [vm.name for vm in vms if vm.status not in state.STABLE | {Vm.Status.ERROR}]
    if not busy and not any(state.can(vm, action) for vm in vms):
        Env.objects.filter(pk=env.pk).update(is_stopped=action == VmAction.STOP)
        return None
    # The cooldown, then what the VMs are doing: a polite client waits Retry-After.
    policy.claim_mgmt_slot(env, timezone.now(), by=by)
    vm_ids = []
    for vm in vms:
        if state.can(vm, action):
            try:
                state.claim(vm, action)
            except IllegalState:
                continue  # it moved on since it was read
            vm_ids.append(vm.pk)
    if not vm_ids:
        raise IllegalState(f"VMs still busy: {', '.join(busy)}; retry when their operations finish")
    Env.objects.filter(pk=env.pk).update(is_stopped=action == VmAction.STOP)
    return record(kind, env=env, by=by, idempotency_key=idempotency_key, params={"vm_ids": vm_ids})


@audited("env.stop")
@idempotent
def env_stop(*, env: Env, by, idempotency_key: str = "") -> Operation | None:
    """Stop every running VM of the Env (the seed's is_stopped); None if none runs."""
    return _env_power(env, VmAction.STOP, EnvKind.ENV_STOP, by, idempotency_key)


@audited("env.start")
@idempotent
def env_start(*, env: Env, by, idempotency_key: str = "") -> Operation | None:
    """Start every stopped VM of the Env; None if every VM runs already. A sleeping Env is
    woken (envs/sleep.py: its ports lead to its VMs again)."""
    if env.asleep_since is not None:
        policy.check_can_manage(by, env, "env_start")
        return sleep.env_wake(env.pk, why=f"started by {by.get_username()}")
    return _env_power(env, VmAction.START, EnvKind.ENV_START, by, idempotency_key)


@audited("env.deny_outgoing")
@idempotent
def env_set_deny_outgoing(*, env: Env, deny: bool, by, idempotency_key: str = "") -> Operation | None:
    """Cut every VM of the Env off from everything beyond the node network (or allow it
    again). None when it is so already (nothing recorded)."""
    policy.check_can_manage(by, env, "env_set_deny_outgoing")
    if not isinstance(deny, bool):
        raise InvalidInput("deny_outgoing", "must be true or false")
    env = Env.objects.select_for_update().get(pk=env.pk)
    policy.check_live(env)
    previous = env.deny_outgoing
    if previous == deny:
        return None  # so already: nothing recorded
    vms = list(env.vms.live().exclude(status=Vm.Status.CREATING))
    for vm in vms:
        state.claim_network(vm)  # the whole change or nothing (the transaction rolls back)
    Env.objects.filter(pk=env.pk).update(deny_outgoing=deny)
    vm_ids = [vm.pk for vm in vms]
    return record(EnvKind.ENV_DENY_OUTGOING, env=env, by=by, idempotency_key=idempotency_key,
                  params={"deny": deny, "previous": previous, "vm_ids": vm_ids})


@audited("env.destroy")
@idempotent
def env_destroy(*, env: Env, by, idempotency_key: str = "", kind: str = EnvKind.ENV_DESTROY) -> Operation:
    """Destroy every VM and release their ports; the Env row and its operations stay on record."""
    policy.check_can_manage(by, env, "env_destroy")
    env = Env.objects.select_for_update().get(pk=env.pk)
    if env.status == Env.Status.DESTROYED:
        raise IllegalState(f"Env {env.name} is destroyed")
    if env.is_warm_pool:
        raise IllegalState(f"Env {env.name} holds a warm pool's spares: switch the pool off instead")
    policy.claim_mgmt_slot(env, timezone.now(), by=by)
    # A destroy left half-way (its worker lost) is taken over here, so an Env
    # still marked destroying may be destroyed again.
    vm_ids = claim_for_destroy(env, list(env.vms.live().order_by("pk")), by=by)
    Env.objects.filter(pk=env.pk).update(status=Env.Status.DESTROYING)
    return record(kind, env=env, by=by, idempotency_key=idempotency_key, params={"vm_ids": vm_ids})


def env_expire_due(now=None, limit: int = 100) -> list[Operation]:
    """Queue the destruction of Envs whose end has passed, one at a time."""
    now = now or timezone.now()
    due = Env.objects.filter(status=Env.Status.ACTIVE, end_at__lte=now, is_warm_pool=False).order_by("end_at")
    return expire_each(due.values_list("pk", flat=True), env_expire_one, now, limit)


def env_expire_one(env_id: int, *, now=None) -> Operation | None:
    """One step of the sweep: expire this Env if it is still live and past its end."""
    now = now or timezone.now()
    env = Env.objects.filter(pk=env_id, status=Env.Status.ACTIVE, end_at__lte=now).first()
    if env is None:
        return None
    try:
        return env_destroy(env=env, by=None, kind=EnvKind.ENV_EXPIRE)
    except IllegalState:
        return None  # a VM is mid-operation; the next sweep tries again




@audited("env.idle_suspend")
def env_set_idle_suspend(*, env: Env, minutes, by) -> Env:
    """Sleep after `minutes` idle (None: never). Done at once: the next idle check reads it;
    a sleeping Env sleeps on (its next connection wakes it)."""
    policy.check_can_manage(by, env, "env_set_idle_suspend")
    minutes = sleep.check_idle_suspend(minutes)
    env = Env.objects.select_for_update().get(pk=env.pk)
    policy.check_live(env)
    Env.objects.filter(pk=env.pk).update(idle_suspend=minutes)
    env.idle_suspend = minutes
    return env
