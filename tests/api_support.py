"""Helpers for the REST API tests: clients holding a valid, expired or revoked
token, and the world most API tests act on.

Services enqueue their tasks on commit; inside a test's transaction nothing
commits, so an API call's operation stays queued unless the test wraps the
call in `run_tasks()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import ssh_key_add, token_create, token_revoke
from envs.blueprints import blueprint_save
from envs.models import Env, EnvMember, Peering
from notifications.services import send_test_notification, webhook_create
from operations.models import Operation
from tests.conftest import make_user
from tests.support import public_key_line, take_snapshot
from ttportal import ratelimit
from vms.models import Snapshot, Vm
from vms.services import vm_stop


def token_client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client


def client_for(user, name: str = "test") -> APIClient:
    """A client authenticated by a fresh, valid token of `user`."""
    _, secret = token_create(user=user, name=name)
    return token_client(secret)


def expired_client(user) -> APIClient:
    token, secret = token_create(user=user, name="expired", expires_in=60)
    ApiToken.objects.filter(pk=token.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    return token_client(secret)


def revoked_client(user) -> APIClient:
    token, secret = token_create(user=user, name="revoked")
    token_revoke(token=token, by=user)
    return token_client(secret)


ROLES = ["owner", "other", "anonymous", "expired", "revoked", "staff"]


def client_as(role: str, *, owner, other, staff) -> APIClient:
    return {
        "owner": lambda: client_for(owner),
        "other": lambda: client_for(other),
        "anonymous": APIClient,
        "expired": lambda: expired_client(owner),
        "revoked": lambda: revoked_client(owner),
        "staff": lambda: client_for(staff),
    }[role]()


@dataclass
class World:
    """alice's Env `demo`: vm0 running with snapshot s1, vm1 stopped; an operation on record."""

    env: Env
    running: Vm
    stopped: Vm
    snapshot: Snapshot
    operation: Operation


def build_world(owner, make_env, run_tasks) -> World:
    env = make_env(owner, vms=2)
    running, stopped = env.vms.order_by("name")
    with run_tasks():
        vm_stop(vm=stopped, by=owner)
    snapshot = take_snapshot(running, run_tasks)
    running.refresh_from_db()
    stopped.refresh_from_db()
    assert (running.status, stopped.status) == ("running", "stopped")
    return World(env=env, running=running, stopped=stopped, snapshot=snapshot,
                 operation=env.operations.order_by("pk").first())


# A blueprint's file (the world's template; its Env is named as the world's, so a launch names another).
BLUEPRINT_FILE = "name: demo\nlifetime: 1h\nvms:\n  - name: a\n    template: tt/busybox\n"


def build_full_world(owner, make_env, run_tasks):
    """build_world and one of each of the owner's other objects an endpoint acts on: a token,
    an SSH key, a webhook with a delivery, another Env asked to peer with the first, a
    blueprint, and a member of the Env: hugo, a viewer (whom it can be given to)."""
    w = build_world(owner, make_env, run_tasks)
    w.token, _ = token_create(user=owner, name="ci")
    w.key = ssh_key_add(user=owner, public_key=public_key_line())
    w.webhook, _ = webhook_create(user=owner, endpoint="https://ci.example.com/hook")
    w.delivery = send_test_notification(user=owner, channel="webhook", webhook=w.webhook)
    ratelimit.clear()  # the world's test delivery does not use up the owner's test of a test
    w.peer = make_env(owner, name="peer")
    Peering.objects.create(env_a=w.env, env_b=w.peer, asked_for=w.env, requested_by=owner)
    w.blueprint = blueprint_save(by=owner, name="bp", text=BLUEPRINT_FILE)
    w.member = EnvMember.objects.create(env=w.env, user=make_user("hugo"), role=EnvMember.Role.VIEWER)
    return w


def assert_rate_limited(response, *, limit_name: str, limit: int, period: int | None = None) -> int:
    """A refusal by a rate limit or cap (ttportal/ratelimit.py): 429, Retry-After, and a
    body naming the limit. Returns the seconds to wait."""
    assert response.status_code == 429, response.content
    wait = int(response["Retry-After"])
    assert wait > 0
    body = response.json()
    assert (body["code"], body["limit_name"], body["limit"], body["retry_after"]) == (
        "rate_limited", limit_name, limit, wait), body
    assert body.get("period") == period
    return wait


def assert_portal_rate_limited(response, *, says: str) -> int:
    """The portal's answer to the same refusal: a 429 page with Retry-After, saying it."""
    assert response.status_code == 429
    wait = int(response["Retry-After"])
    assert wait > 0
    page = response.content.decode()
    assert says in page, page
    assert f"retry in {wait} s" in page or f"Try again in\n    {wait} s" in page
    return wait
