"""Admin actions that call the services: one per selected object, each result reported.

Operators act through the same service functions as the portal and the API, with
`by=request.user`, so every action is checked (state, cooldown), audited (the
operator is the operation's `requested_by`) and queued like any other request.
A refusal (a `TTError`, or a database race: see ttportal.refusals) rolls back
that object's request only; the others go on.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.http import HttpRequest
from django.utils.text import capfirst

from ttportal.refusals import refused

# (obj, operator) -> whatever the service returns (an Operation)
ServiceCall = Callable[[object, object], object]


def run_service(
    modeladmin: admin.ModelAdmin, request: HttpRequest, objects, call: ServiceCall, done: str
) -> tuple[int, int]:
    """Call `call(obj, request.user)` for each object; report successes and each failure.

    `done` completes "<done>: N <objects>.", e.g. "Stop queued". Returns (succeeded, failed).
    """
    ok = failed = 0
    for obj in objects:
        try:
            call(obj, request.user)
        except Exception as exc:
            error = refused(exc)
            failed += 1
            modeladmin.message_user(request, f"{obj}: {error}", messages.ERROR)
        else:
            ok += 1
    if ok:
        opts = modeladmin.model._meta
        noun = opts.verbose_name if ok == 1 else opts.verbose_name_plural
        modeladmin.message_user(request, f"{capfirst(done)}: {ok} {noun}.", messages.SUCCESS)
    return ok, failed


def service_action(name: str, description: str, done: str, call: ServiceCall):
    """An admin action (listed in ModelAdmin.actions) that runs `call` on each selected object.

    It needs the "operate" permission: see OperateMixin.
    """

    def action(modeladmin, request, queryset):
        run_service(modeladmin, request, queryset, call, done)

    action.__name__ = name
    return admin.action(description=description, permissions=["operate"])(action)


class OperateMixin:
    """The permission behind service actions: the model's change permission.

    The objects themselves stay view-only in the admin (their state is the
    services' to change), so the change permission is what lets an operator act.
    """

    def has_operate_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")
