"""Who may act on an Env, and how often long operations may run on it."""

from __future__ import annotations

import math
from datetime import datetime

from django.conf import settings

from envs.models import Env
from ttportal.errors import CooldownActive, Forbidden, IllegalState


def check_can_manage(user, env: Env) -> None:
    """Owner or staff; `None` is the system itself (expiry sweeps)."""
    if user is None:
        return
    if not user.is_authenticated or not user.is_active:
        raise Forbidden("sign in first")
    if user.is_staff or env.owner_id == user.pk:
        return
    raise Forbidden("you do not own this Env")


def may_manage(user, env: Env) -> bool:
    try:
        check_can_manage(user, env)
    except Forbidden:
        return False
    return True


def check_staff(user) -> None:
    """Operators only (actions on the platform rather than on one's own Envs)."""
    if user is None or not user.is_authenticated or not user.is_active or not user.is_staff:
        raise Forbidden("only staff may do this")


def check_live(env: Env) -> None:
    if env.status != Env.Status.ACTIVE:
        raise IllegalState(f"Env {env.name} is {env.status}")


def claim_mgmt_slot(env: Env, now: datetime, *, by) -> None:
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
    Env.objects.filter(pk=env.pk).update(last_mgmt_at=now)


def cooldown_remaining(env: Env, now: datetime) -> int:
    """Seconds until the next long operation is accepted (0: now). For pages and APIs."""
    if not settings.TT_MGMT_COOLDOWN or env.last_mgmt_at is None:
        return 0
    left = settings.TT_MGMT_COOLDOWN - (now - env.last_mgmt_at).total_seconds()
    return max(0, math.ceil(left))
