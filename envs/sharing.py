"""Sharing an Env: its owner (or an admin member, or staff with the permission) grants a
user or a Django group one role on it (envs.EnvMember; the roles' actions are
ttportal.permissions.ROLE_ACTIONS), changes it, takes it back; the owner (or staff) gives
the Env to one of its members.

One function per action, called by the API, the portal and the admin alike: the one place
each happens (and where its audit event goes). Quotas stay the owner's: what a member
adds to the Env (a VM, a snapshot) is charged to the owner (vms.services), and a transfer
is refused when the new owner's quota cannot take everything the Env holds.

A change takes effect at once: every check reads the memberships anew (Env.role_of), and
the open consoles of the Env's VMs are told to check again (vms.console.recheck), so a
removed member's console closes and a demoted one's stops taking input.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Count, F, Q, Sum

from accounts import quotas
from accounts.quotas import Usage
from audit import details
from audit.recording import audited
from envs.models import Env, EnvMember
from ttportal.errors import ConflictingInput, Forbidden, IllegalState, InvalidInput
from vms import console, policy, usage
from vms.models import PortMapping, Snapshot, live_vms

ROLE_RULE = f"must be one of {', '.join(EnvMember.Role.values)}"


def check_role(role, field: str = "role") -> str:
    if role not in EnvMember.Role.values:
        raise InvalidInput(field, ROLE_RULE)
    return role


def find_user(username, field: str = "user"):
    """The active user named `username`, or a clear refusal naming the field."""
    if not isinstance(username, str) or not username.strip():
        raise InvalidInput(field, "must be a username")
    user = get_user_model().objects.filter(username=username.strip(), is_active=True).first()
    if user is None:
        raise ConflictingInput(field, f"no active user is named {username.strip()!r}")
    return user


def find_group(name, field: str = "group") -> Group:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(field, "must be a group's name")
    group = Group.objects.filter(name=name.strip()).first()
    if group is None:
        raise ConflictingInput(field, f"no group is named {name.strip()!r}")
    return group


def members_of(env: Env):
    """The Env's members, users first then groups, each with who granted it."""
    return (EnvMember.objects.filter(env=env).select_related("user", "group", "granted_by")
            .order_by(F("group_id").asc(nulls_first=True), "user__username", "group__name", "id"))


def envs_administered(user):
    """The ids of the Envs `user` owns or holds the admin role on (theirs or a group's), as a
    subquery: whose audit events they read (GET /api/audit/)."""
    admin_of = EnvMember.objects.of_user(user).filter(role=EnvMember.Role.ADMIN).values("env_id")
    return Env.objects.filter(Q(owner=user) | Q(pk__in=admin_of)).values("pk")


def _check_shareable(env: Env) -> None:
    if env.is_warm_pool:
        raise IllegalState(f"Env {env.name} holds a warm pool's spares: it is the site's, not shared")
    if env.status == Env.Status.DESTROYED:
        raise IllegalState(f"Env {env.name} is destroyed")


def _tell_consoles(env: Env) -> None:
    """Once committed: the consoles open on the Env's VMs check their viewers' rights again."""
    vm_ids = list(env.vms.live().values_list("pk", flat=True))
    if vm_ids:
        transaction.on_commit(lambda: console.recheck(vm_ids))


@audited("env.share", detail=details.member)
@transaction.atomic
def env_share(*, env: Env, role, by, user=None, group=None, field: str | None = None) -> EnvMember:
    """Grant `user` or `group` (one of them; a model, or a name as typed, looked up only once
    `by` may share, so that nobody else learns which names exist) `role` on the Env.
    `field`: what a form calls the name, for its refusals (the API's `user` or `group`)."""
    policy.check_can_manage(by, env, "env_share")
    role = check_role(role)
    if (user is None) == (group is None):
        raise InvalidInput(field or "user", "name a user or a group (one of them)")
    if isinstance(user, str):
        user = find_user(user, field=field or "user")
    if isinstance(group, str):
        group = find_group(group, field=field or "group")
    env = Env.objects.select_for_update().get(pk=env.pk)
    _check_shareable(env)
    if user is not None:
        if user.pk == env.owner_id:
            raise ConflictingInput("user", f"{user.get_username()} owns this Env and may do everything on it "
                                   "already")
        if EnvMember.objects.filter(env=env, user=user).exists():
            raise ConflictingInput("user", f"{user.get_username()} is a member of this Env already: "
                                   "change their role instead")
    elif EnvMember.objects.filter(env=env, group=group).exists():
        raise ConflictingInput("group", f"group {group.name} is a member of this Env already: "
                               "change its role instead")
    return EnvMember.objects.create(env=env, user=user, group=group, role=role, granted_by=by)


@audited("env.share", on=lambda kwargs, result: kwargs["member"].env, detail=details.member)
@transaction.atomic
def env_member_set_role(*, member: EnvMember, role, by) -> EnvMember:
    """Change a member's role (a weaker one takes effect at once, open consoles too)."""
    env = member.env
    policy.check_can_manage(by, env, "env_share")
    role = check_role(role)
    env = Env.objects.select_for_update().get(pk=env.pk)
    _check_shareable(env)
    EnvMember.objects.filter(pk=member.pk).update(role=role, granted_by=by)
    member.role, member.granted_by = role, by
    _tell_consoles(env)
    return member


@audited("env.unshare", on=lambda kwargs, result: kwargs["member"].env, detail=details.member)
@transaction.atomic
def env_unshare(*, member: EnvMember, by) -> None:
    """Take a member's role away, at once (open consoles too). A member may leave an Env
    by removing their own membership."""
    env = member.env
    if by is None or member.user_id != by.pk:
        policy.check_can_manage(by, env, "env_share")
    Env.objects.select_for_update().filter(pk=env.pk).first()
    EnvMember.objects.filter(pk=member.pk).delete()
    _tell_consoles(env)


def env_holds(env: Env) -> Usage:
    """What the Env holds against its owner's quota: itself, its live VMs, their snapshots
    and forwarded ports (the rules of vms/usage.py)."""
    vms = env.vms.filter(live_vms("")).aggregate(
        n=Count("pk"), cpu=Sum("cpu_num"), mem=Sum("mem_mb"), disk=Sum("disk_mb"))
    snapshots = Snapshot.objects.filter(live_vms("vm"), vm__env=env).count()
    ports = PortMapping.objects.filter(live_vms("vm"), vm__env=env).count()
    return Usage(envs=1 if env.is_live else 0, vms=vms["n"] or 0, vcpus=vms["cpu"] or 0,
                 mem_mb=vms["mem"] or 0, disk_mb=vms["disk"] or 0, snapshots=snapshots, ports=ports)


def check_may_transfer(env: Env, by) -> None:
    """Only the Env's owner, or staff with the permission, gives it away (no member's role)."""
    if by is not None and by.pk != env.owner_id and not policy.may(by, "env_transfer"):
        raise Forbidden("only the Env's owner (or staff with the permission "
                        f"{policy.permission_for('env_transfer')}) may give it to someone else")


@audited("env.transfer", detail=details.new_owner)
@transaction.atomic
def env_transfer(*, env: Env, new_owner, by) -> Env:
    """Give the Env to `new_owner`, one of its members, if their quota takes everything it
    holds (QuotaExceeded naming the quota otherwise). Only its owner, or staff with the
    permission. The old owner stays on it as an admin member."""
    check_may_transfer(env, by)
    if isinstance(new_owner, str):  # a name as typed: looked up only once `by` may give it away
        new_owner = find_user(new_owner, field="owner")
    if new_owner.pk == env.owner_id:
        raise ConflictingInput("owner", f"{new_owner.get_username()} owns this Env already")
    if not new_owner.is_active:
        raise ConflictingInput("owner", f"{new_owner.get_username()} is not an active user")
    # The new owner's row, then the Env's (the order of every service adding to a use).
    limits = usage.admit(new_owner, by=by)
    env = Env.objects.select_for_update().select_related("owner").get(pk=env.pk)
    _check_shareable(env)
    if env.role_of(new_owner) is None:
        raise ConflictingInput("owner", f"{new_owner.get_username()} is not a member of this Env: "
                               "share it with them first")
    if Env.objects.live().filter(owner=new_owner, name=env.name).exists():
        raise ConflictingInput("owner", f"{new_owner.get_username()} has a live Env named {env.name} already")
    holds = env_holds(env)
    usage.check_adds(new_owner, limits, holds)
    if limits is not None:
        quotas.check_lifetime(new_owner, limits, current=0,
                              wanted=int((env.end_at - env.start_at).total_seconds()))
    old_owner = env.owner
    Env.objects.filter(pk=env.pk).update(owner=new_owner)
    EnvMember.objects.filter(env=env, user=new_owner).delete()
    EnvMember.objects.update_or_create(env=env, user=old_owner,
                                       defaults={"role": EnvMember.Role.ADMIN, "granted_by": by})
    env.owner = new_owner
    _tell_consoles(env)
    return env
