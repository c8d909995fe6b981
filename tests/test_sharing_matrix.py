"""Sharing an Env, over every API endpoint (tests/test_api_matrix.py's list): a user alice
shared her Envs with, as a viewer, an operator or an admin, directly or through a group,
gets exactly what that role holds (ttportal.permissions.ROLE_ACTIONS): sees the Envs, VMs,
snapshots and operations, takes the actions of the role, and is refused the others with a
403 (the Env is seen, so its existence is no secret to them) that changes nothing. Of
alice's other things (tokens, keys, webhooks, blueprints) a member sees nothing, like any
other user. A user in no role (carol) sees none of it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from envs.models import EnvMember
from operations.models import Operation
from tests.api_support import build_full_world, client_for
from tests.conftest import make_user
from tests.module_world import module_world
from tests.test_api_matrix import ENDPOINTS, Endpoint, _url, _visible_ids, expected
from ttportal import permissions

shared, world, alice, _clean_test_driver = module_world(build_full_world, "world", "alice")

# member roles: (role granted, through a group?)
MEMBERS = {
    "viewer": ("viewer", False),
    "operator": ("operator", False),
    "admin": ("admin", False),
    "group_operator": ("operator", True),
    "none": (None, False),
}
SHARED_SCOPES = ("owned", "seen")  # alice's Env, its VMs, snapshots, operations (and the peer's clone)
# Endpoints on alice's objects that are not the Env's: as for any other user.
NOT_THE_ENVS = ("{blueprint}", "{token}", "{key}", "{webhook}", "{delivery}")


def _is_envs(endpoint: Endpoint) -> bool:
    return endpoint.scope in SHARED_SCOPES and not any(part in endpoint.path for part in NOT_THE_ENVS)


def action_of(endpoint: Endpoint) -> str:
    """The policy's action an endpoint takes: its operation's kind, or sharing's own."""
    if "/members/" in endpoint.path:
        return "env_share"
    if endpoint.path.endswith("/transfer/"):
        return "env_transfer"  # the owner's (or staff's) alone: no role holds it
    return endpoint.kind


def reads_the_envs_audit(member: str) -> bool:
    """An Env's admins read its audit events (audit.scope, envs.sharing.envs_administered)."""
    return MEMBERS[member][0] == "admin"


def member_expected(endpoint: Endpoint, member: str) -> int:
    role = MEMBERS[member][0]
    if endpoint.path.startswith("/api/audit/{event}"):
        return endpoint.ok if reads_the_envs_audit(member) else 404
    if not _is_envs(endpoint) or role is None:
        return expected(endpoint, "other")
    if endpoint.method == "get":
        return endpoint.ok  # every role sees the Env and what is in it
    return endpoint.ok if permissions.role_allows(role, action_of(endpoint)) else 403


def _member_client(member: str, w):
    role, via_group = MEMBERS[member]
    user = make_user(f"m-{member}")
    if role is not None:
        for env in (w.env, w.peer):
            if via_group:
                group, _ = Group.objects.get_or_create(name="team")
                user.groups.add(group)
                EnvMember.objects.create(env=env, group=group, role=role)
            else:
                EnvMember.objects.create(env=env, user=user, role=role)
    return client_for(user), user


def test_every_action_of_a_role_is_an_endpoints_kind():
    kinds = {e.kind for e in ENDPOINTS if _is_envs(e) and e.kind}
    for role, actions in permissions.ROLE_ACTIONS.items():
        unknown = {a for a in actions if a not in permissions.ACTIONS}
        assert not unknown, (role, unknown)
    # each role holds the weaker one's actions
    assert permissions.ROLE_ACTIONS["viewer"] < permissions.ROLE_ACTIONS["operator"] < \
        permissions.ROLE_ACTIONS["admin"]
    assert kinds <= permissions.ROLE_ACTIONS["admin"] | {"env_create"}


@pytest.mark.parametrize("member", list(MEMBERS))
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
def test_a_member_gets_exactly_what_their_role_holds(endpoint, member, world, bob, db_state):
    client, user = _member_client(member, world)
    want = member_expected(endpoint, member)
    before = db_state()

    response = getattr(client, endpoint.method)(_url(endpoint, world), endpoint.body, format="json")

    assert response.status_code == want, response.content
    if want >= 400:
        assert db_state() == before  # a refusal changes nothing
        if want == 403 and _is_envs(endpoint):
            assert response.json()["code"] == "forbidden"
            message = response.json()["message"]
            assert f"your role on this Env is {MEMBERS[member][0]}" in message or "owner" in message
        return
    if want == 202 and endpoint.kind:
        op = Operation.objects.get(pk=response.json()["id"])
        assert (op.kind, op.requested_by) == (endpoint.kind, user)
    if endpoint.scope == "list":
        ids = {item["id"] for item in response.json()["results"]}
        envs_list = endpoint.path in ("/api/envs/", "/api/vms/", "/api/snapshots/", "/api/operations/")
        mine = _visible_ids(endpoint, world)
        if (envs_list and MEMBERS[member][0] is not None) or (
                endpoint.path == "/api/audit/" and reads_the_envs_audit(member)):
            assert mine <= ids, (member, ids)
        else:
            assert not (mine & ids), (member, ids)


@pytest.mark.parametrize("member", ["viewer", "operator", "admin", "group_operator"])
def test_the_env_shows_the_callers_role(member, world):
    client, _ = _member_client(member, world)
    listed = {e["id"]: e["role"] for e in client.get("/api/envs/").json()["results"]}
    assert listed[world.env.pk] == MEMBERS[member][0]
    assert client.get(f"/api/envs/{world.env.pk}/").json()["role"] == MEMBERS[member][0]
