"""What audit records without a service: logins (Django's auth signals), the admin's own
edits (its LogEntry rows), and the origin of the tasks django-q2 runs."""

from __future__ import annotations

import json
import threading

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntryManager
from django.contrib.auth import get_user_model
from django.contrib.auth import signals as auth_signals
from django_q import signals as q_signals

from audit import context
from audit.recording import REFUSED, record

# Model label -> the verb stem of its admin edits, for the models whose edits are actions
# with a name of their own (accounts registers its quotas: quota.change). Others are
# admin.add / admin.change / admin.delete.
ADMIN_VERBS: dict[str, dict[str, str]] = {}
# Models whose admin edits call their services, which record their own verbs (a warm
# pool's form calls vms.warm.pool_save: warm_pool.save): the admin's log adds no event.
BY_SERVICES: set[str] = set()
ADMIN_ACTIONS = {ADDITION: "add", CHANGE: "change", DELETION: "delete"}
# Usernames longer than this are cut (a failed login's name is what was typed).
USERNAME_MAX = 150


def register_admin_verb(label: str, stem: str, **verbs: str) -> None:
    """Admin edits of `label` ("accounts.UserQuota") are recorded as `<stem>.add|change|delete`,
    or as the verb given for that action (`delete="token.revoke"`)."""
    ADMIN_VERBS[label.lower()] = {"stem": stem, **verbs}


def recorded_by_services(label: str) -> None:
    """Admin edits of `label` ("vms.WarmPool") go through its services, which record them."""
    BY_SERVICES.add(label.lower())


def logged_in(sender, request=None, user=None, **kwargs):
    record("login", by=user, on=user, origin=context.origin_of(request) if request is not None else None)


def logged_out(sender, request=None, user=None, **kwargs):
    if user is not None:
        record("logout", by=user, on=user, origin=context.origin_of(request) if request is not None else None)


def login_failed(sender, credentials=None, request=None, **kwargs):
    # Only the name that was typed: Django already hides the password in `credentials`,
    # and nothing else of them is kept.
    name = str((credentials or {}).get("username") or "")[:USERNAME_MAX]
    record("login.failed", username=name, result=REFUSED, code="login_failed",
           origin=context.origin_of(request) if request is not None else None,
           detail={"username": name})


def changed_fields(message) -> list[str]:
    """The field names an admin change message lists (never their values)."""
    try:
        parts = json.loads(message) if isinstance(message, str) and message else message or []
    except ValueError:
        return []
    fields: list[str] = []
    for part in parts if isinstance(parts, list) else []:
        for body in part.values() if isinstance(part, dict) else []:
            if isinstance(body, dict):
                fields.extend(str(f) for f in body.get("fields", []))
    return fields


def _admin_logged(user_id, objects, action_flag, change_message) -> None:
    """One event per object the admin added, changed or deleted (its LogEntry's facts)."""
    if not objects:
        return
    user = get_user_model().objects.filter(pk=user_id).first()
    action = ADMIN_ACTIONS.get(action_flag, "change")
    fields = changed_fields(change_message)
    for obj in objects:
        label = obj._meta.label_lower
        if label in BY_SERVICES:
            continue
        verbs = ADMIN_VERBS.get(label, {})
        verb = verbs.get(action) or f"{verbs.get('stem', 'admin')}.{action}"
        detail = {"model": label}
        if fields:
            detail["fields"] = fields
        record(verb, by=user, on=obj, detail=detail, origin=_admin_origin())


def _admin_origin() -> context.Origin:
    origin = context.current()
    if origin.interface == context.SYSTEM:  # a LogEntry written outside a request: still the admin's
        return context.Origin(interface=context.ADMIN)
    return origin


_original_log_actions = LogEntryManager.log_actions


def _log_actions(self, user_id, queryset, action_flag, change_message="", *, single_object=False):
    objects = list(queryset)
    entries = _original_log_actions(self, user_id, objects, action_flag, change_message,
                                    single_object=single_object)
    _admin_logged(user_id, objects, action_flag, change_message)
    return entries


# --- django-q2 tasks: the system acts, named by its schedule (or task) -------------------

_tasks = threading.local()


def task_started(sender, func=None, task=None, **kwargs):
    task = task or {}
    group = task.get("group") or ""
    name = group or str(task.get("func") or getattr(func, "__name__", "task"))
    origin = context.Origin(interface=context.SCHEDULE if group else context.SYSTEM, system=name[:100])
    stack = getattr(_tasks, "tokens", None)
    if stack is None:
        stack = _tasks.tokens = []
    stack.append(context._ORIGIN.set(origin))


def task_ended(sender, **kwargs):
    stack = getattr(_tasks, "tokens", None)
    if stack:
        context._ORIGIN.reset(stack.pop())


def connect() -> None:
    auth_signals.user_logged_in.connect(logged_in, dispatch_uid="audit.login")
    auth_signals.user_logged_out.connect(logged_out, dispatch_uid="audit.logout")
    auth_signals.user_login_failed.connect(login_failed, dispatch_uid="audit.login_failed")
    q_signals.pre_execute.connect(task_started, dispatch_uid="audit.task_started")
    q_signals.post_execute_in_worker.connect(task_ended, dispatch_uid="audit.task_ended")
    if LogEntryManager.log_actions is _original_log_actions:
        LogEntryManager.log_actions = _log_actions
