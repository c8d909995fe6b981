"""Helpers for the admin tests: an operator, posting an action, counting queries."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from envs.models import Env
from envs.services import env_create
from operations.models import Operation
from vms.new_vms import NewVm


def make_operator(client):
    """A staff superuser ("root"), logged in on `client`."""
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root")
    client.force_login(root)
    return root


def make_env(owner, *, name: str = "demo", vms: int = 1, ports=(80,), run=None, **env_args) -> Env:
    """An Env of `vms` VMs. With `run` (the run_tasks fixture) they are created and booted;
    without it they stay `creating` (enough for lists and counts)."""
    specs = [NewVm(name=f"vm{i}", template="tt/busybox", ports=list(ports)) for i in range(vms)]
    if run is None:
        return env_create(owner=owner, by=owner, name=name, vms=specs, **env_args).env
    with run():
        op = env_create(owner=owner, by=owner, name=name, vms=specs, **env_args)
    op.refresh_from_db()
    assert op.status == Operation.Status.SUCCEEDED, op.error_message
    return op.env


def post_action(client, changelist_url: str, action: str, objects):
    """Run an admin action on `objects` the way the changelist form does; follow the redirect."""
    data = {"action": action, "_selected_action": [str(o.pk) for o in objects], "index": "0"}
    response = client.post(changelist_url, data, follow=True)
    assert response.status_code == 200
    return response


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


def offered_actions(client, changelist_url: str) -> set[str]:
    """The actions the changelist's action bar offers the signed-in user."""
    response = client.get(changelist_url)
    assert response.status_code == 200
    form = response.context["action_form"]  # None when no action is offered
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


def grant(user, *perms: str) -> None:
    """Give `user` these permissions ("app.codename"); a fresh object, so no stale cache."""
    from django.contrib.auth.models import Permission

    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
