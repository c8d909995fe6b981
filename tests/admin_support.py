"""Helpers for the admin tests: an operator, posting an action, counting queries."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from envs.models import Env, Operation
from envs.services import env_create
from vms.specs import NewVm


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
