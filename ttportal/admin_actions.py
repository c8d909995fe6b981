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
from django.http import HttpRequest
from django.utils.text import capfirst

from ttportal import permissions
from ttportal.errors import Forbidden
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


def service_action(name: str, description: str, done: str, call: ServiceCall, *, policy_action: str):
    """An admin action (listed in ModelAdmin.actions) that runs `call` on each selected object.

    `policy_action` names the action in ttportal.permissions.ACTIONS: an operator without
    its permission is not offered the action (OperateMixin.get_actions), and is refused
    if they post it anyway; the service called checks again, per object.
    """

    def action(modeladmin, request, queryset):
        if not allowed(modeladmin, request, policy_action):
            return
        run_service(modeladmin, request, queryset, call, done)

    action.__name__ = name
    return policy_bound(admin.action(description=description)(action), policy_action)


def policy_bound(action, policy_action: str):
    """Mark an admin action with the ttportal.permissions action it takes."""
    permissions.permission_for(policy_action)  # a name missing from the table fails at import
    action.policy_action = policy_action
    return action


def allowed(modeladmin: admin.ModelAdmin, request: HttpRequest, policy_action: str) -> bool:
    """The policy's answer for an action run from the admin; a refusal is said, not raised."""
    try:
        permissions.check(request.user, policy_action)
    except Forbidden as exc:
        modeladmin.message_user(request, exc.message, messages.ERROR)
        return False
    return True


class OperateMixin:
    """Admin actions offered only to an operator the policy lets take them.

    The objects themselves stay view-only in the admin (their state is the services' to
    change): each action names its ttportal.permissions action (e.g. destroying VMs takes
    vms.delete_vm, starting them vms.change_vm), and an operator sees the actions whose
    permission they hold.
    """

    def get_actions(self, request: HttpRequest):
        actions = super().get_actions(request)
        return {
            name: entry for name, entry in actions.items()
            if getattr(entry[0], "policy_action", None) is None
            or permissions.may(request.user, entry[0].policy_action)
        }
