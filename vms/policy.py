"""Who may act on an Env, and how often long operations may run on it.

One rule for every interface (API, portal, admin, admin actions, tasks): an Env's owner
acts on their own Envs, VMs and snapshots with no permission at all; a member of the Env
(a user or group it is shared with) does what their role holds (ROLE_ACTIONS); anyone else
acts on them only as staff holding the Django model permission the action maps to in ACTIONS.
Superusers hold every permission (Django's has_perm). `is_staff` alone grants nothing
but the admin's door: seeing another user's objects needs the view permission too.

The table (ACTIONS: action -> permission) and the decision (`check`) are written once, in
ttportal.permissions, re-exported here: envs.models, vms.models and accounts.quotas need
them too, and importing this module from there would be a cycle (tests/test_layers.py).

It lives in vms, not envs: VM and snapshot actions need it, envs sits above vms
(docs/architecture.md), and envs uses this same module. It reads the Env it is given (an
envs.Env, reached through `vm.env`) by its fields and never imports envs.
"""

from __future__ import annotations

import math
from datetime import datetime

from django.conf import settings

from ttportal.errors import CooldownActive, Forbidden, IllegalState
from ttportal.permissions import (  # noqa: F401  (the one table)
    ACTIONS,
    ROLE_ACTIONS,
    check,
    check_staff,
    may,
    permission_for,
)


def check_can_manage(user, env, action: str, *, role: str | None = None) -> None:
    """`action` (a key of ACTIONS) on this Env, or on one of its VMs or snapshots: its owner,
    a member whose role holds it (the Env's `role_of`, read now unless the caller read it
    for this request: `role`, "" for none), or staff with the permission."""
    if user is None or not user.is_authenticated or user.pk == env.owner_id or may(user, action):
        check(user, action, owner_id=env.owner_id)
        return
    if role is None:
        role = env.role_of(user)
    check(user, action, owner_id=env.owner_id, role=role or None)


def allowed_actions(user, env, actions) -> dict[str, bool]:
    """Which of `actions` `user` may take on this Env, its VMs and snapshots (for a page's
    buttons): its role read once for them all."""
    role = env.role_of(user) or ""
    return {action: may_manage(user, env, action, role=role) for action in actions}


def may_manage(user, env, action: str, *, role: str | None = None) -> bool:
    try:
        check_can_manage(user, env, action, role=role)
    except Forbidden:
        return False
    return True


def check_live(env) -> None:
    if env.status != env.Status.ACTIVE:
        raise IllegalState(f"Env {env.name} is {env.status}")


def claim_mgmt_slot(env, now: datetime, *, by) -> None:
    """The seed's management cooldown: refuse a long operation too soon after the last one.

    The caller holds the Env row locked (select_for_update) so two requests
    cannot both pass the check.
    """
    cooldown = settings.TT_MGMT_COOLDOWN
    if by is not None and cooldown and env.last_mgmt_at is not None:
        elapsed = (now - env.last_mgmt_at).total_seconds()
        if elapsed < cooldown:
            raise CooldownActive(retry_after=max(1, math.ceil(cooldown - elapsed)))
    env.last_mgmt_at = now
    type(env).objects.filter(pk=env.pk).update(last_mgmt_at=now)


def cooldown_remaining(env, now: datetime) -> int:
    """Seconds until the next long operation is accepted (0: now). For pages and APIs."""
    if not settings.TT_MGMT_COOLDOWN or env.last_mgmt_at is None:
        return 0
    left = settings.TT_MGMT_COOLDOWN - (now - env.last_mgmt_at).total_seconds()
    return max(0, math.ceil(left))
