"""Who reads which events: staff holding `audit.view_auditevent` read all; anyone else the
events on the Envs they administer (their VMs and snapshots too) and the events of their
own account (their logins, tokens, keys, webhooks: the events by them or for them).

Which Envs a user administers is the envs app's to say (today: those they own; with
sharing, those they are an admin of): it registers the function at start-up
(`register_env_scope`), as vms registers its quota use with accounts, since audit, below
envs, cannot ask it."""

from __future__ import annotations

from collections.abc import Callable

from django.db.models import Q, QuerySet

from audit.models import AuditEvent
from ttportal import permissions

# user -> a queryset (or list) of the ids of the Envs whose events the user reads.
_env_scope: Callable | None = None


def register_env_scope(function: Callable) -> None:
    global _env_scope
    _env_scope = function


def envs_administered(user):
    return _env_scope(user) if _env_scope is not None else []


def sees_all(user) -> bool:
    return permissions.may(user, "audit_view")


def visible_to(user) -> QuerySet:
    if user is None or not user.is_authenticated:
        return AuditEvent.objects.none()
    if sees_all(user):
        return AuditEvent.objects.all()
    return AuditEvent.objects.filter(Q(env_id__in=envs_administered(user)) | Q(user=user) | Q(owner=user))
