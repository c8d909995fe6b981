"""Who gets what, over every API endpoint: the owner, another user, nobody, an expired
token, a revoked token and staff, each exactly what they should (and a refusal changes
nothing). Another user's objects are 404, never 403, so their existence is not told.

Staff act through permissions, never through is_staff alone: an operator (olga, every
permission) may do everything; staff without any permission (stan) see and act on
nothing of alice's (404, like any other user); staff who may only view get 403 on
every action; staff holding one action's permission may take exactly the actions it
maps to (PERMISSION_OF_KIND) and are refused every other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from audit.models import AuditEvent
from operations.models import Operation
from tests.api_support import BLUEPRINT_FILE, ROLES, build_full_world, client_as, client_for
from tests.conftest import make_staff
from tests.module_world import module_world
from tests.support import public_key_line
from ttportal import permissions


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # formatted with the world: {env}, {peer}, {running}, {stopped}, {snapshot}, {op}, {template},
    # {token}, {key}, {webhook}, {delivery}, {blueprint}, {event}, {member}
    scope: str  # owned | list | create | global | personal | password_only | for_other (alice's, named)
    # | seen (alice's, and whoever sees it may: launch a blueprint) | publish (operators only, on alice's)
    ok: int = 200
    body: Any = None
    kind: str = ""  # the operation kind a 202 answers with

    @property
    def id(self) -> str:
        told = {"for_other": " for alice", "publish": " publish"}
        return f"{self.method} {self.path}" + told.get(self.scope, "")


ENDPOINTS = [
    # lists
    Endpoint("get", "/api/envs/", "list"),
    Endpoint("get", "/api/vms/", "list"),
    Endpoint("get", "/api/snapshots/", "list"),
    Endpoint("get", "/api/operations/", "list"),
    Endpoint("get", "/api/templates/", "global"),
    Endpoint("get", "/api/tokens/", "list"),
    Endpoint("get", "/api/keys/", "list"),
    # details
    Endpoint("get", "/api/envs/{env}/", "owned"),
    Endpoint("get", "/api/envs/{env}/envfile/", "owned"),  # the Env as tt.yaml
    Endpoint("get", "/api/vms/{running}/", "owned"),
    Endpoint("get", "/api/snapshots/{snapshot}/", "owned"),
    Endpoint("get", "/api/operations/{op}/", "owned"),
    Endpoint("get", "/api/templates/{template}/", "global"),
    Endpoint("get", "/api/tokens/{token}/", "personal"),
    Endpoint("get", "/api/keys/{key}/", "personal"),
    # Env actions
    Endpoint("post", "/api/envs/", "create", 202,
             {"name": "fresh", "vms": [{"name": "a", "template": "tt/busybox"}]}, "env_create"),
    Endpoint("post", "/api/envs/", "for_other", 202,
             {"name": "fresh", "owner": "alice", "vms": [{"name": "a", "template": "tt/busybox"}]},
             "env_create"),
    Endpoint("post", "/api/envs/{env}/extend/", "owned", 202, {"lifetime": 7200}, "env_extend"),
    # Whoever sees an Env clones it, the clones theirs (the peer: the world's Env has snapshots).
    Endpoint("post", "/api/envs/{peer}/clone/", "seen", 202, {"count": 1}, "env_clone"),
    Endpoint("post", "/api/envs/{env}/start/", "owned", 202, None, "env_start"),
    Endpoint("post", "/api/envs/{env}/stop/", "owned", 202, None, "env_stop"),
    Endpoint("post", "/api/envs/{env}/deny-outgoing/", "owned", 202, {"deny": True}, "env_set_deny_outgoing"),
    Endpoint("post", "/api/envs/{env}/destroy/", "owned", 202, None, "env_destroy"),
    Endpoint("post", "/api/envs/{env}/vms/", "owned", 202, {"name": "extra", "template": "tt/busybox"},
             "vm_add"),
    Endpoint("post", "/api/envs/{env}/peers/", "owned", 202, {"env": "alice/peer"}, "env_peer"),
    Endpoint("delete", "/api/envs/{env}/peers/{peer}/", "owned", 202, None, "env_unpeer"),
    # sharing (tests/test_sharing_matrix.py: the members' own matrix)
    Endpoint("get", "/api/envs/{env}/members/", "owned"),
    Endpoint("post", "/api/envs/{env}/members/", "owned", 201, {"user": "bob", "role": "viewer"}),
    Endpoint("patch", "/api/envs/{env}/members/{member}/", "owned", 200, {"role": "operator"}),
    Endpoint("delete", "/api/envs/{env}/members/{member}/", "owned", 204),
    Endpoint("post", "/api/envs/{env}/transfer/", "owned", 200, {"owner": "hugo"}),
    # VM actions
    Endpoint("post", "/api/vms/{stopped}/start/", "owned", 202, None, "vm_start"),
    Endpoint("post", "/api/vms/{running}/stop/", "owned", 202, None, "vm_stop"),
    Endpoint("post", "/api/vms/{running}/suspend/", "owned", 202, None, "vm_suspend"),
    Endpoint("post", "/api/vms/{running}/destroy/", "owned", 202, None, "vm_destroy"),
    Endpoint("put", "/api/vms/{running}/blacklist/", "owned", 202, {"addresses": ["192.0.2.7"]},
             "vm_set_blacklist"),
    Endpoint("post", "/api/vms/{running}/blacklist/", "owned", 202, {"addresses": ["192.0.2.7"]},
             "vm_set_blacklist"),
    Endpoint("put", "/api/vms/{running}/ports/", "owned", 202, {"ports": [22, "53/udp"]}, "vm_set_ports"),
    Endpoint("post", "/api/vms/{running}/ports/", "owned", 202, {"ports": [22]}, "vm_set_ports"),
    Endpoint("post", "/api/vms/{running}/snapshots/", "owned", 202, {"name": "s2", "life_time": 3600},
             "snapshot_create"),
    # snapshot actions
    Endpoint("post", "/api/snapshots/{snapshot}/apply/", "owned", 202, None, "snapshot_apply"),
    Endpoint("delete", "/api/snapshots/{snapshot}/", "owned", 202, None, "snapshot_destroy"),
    Endpoint("post", "/api/snapshots/{snapshot}/destroy/", "owned", 202, None, "snapshot_destroy"),
    # tokens
    Endpoint("post", "/api/tokens/", "password_only", 201, {"name": "more"}),
    Endpoint("delete", "/api/tokens/{token}/", "personal", 204),
    # SSH keys
    Endpoint("post", "/api/keys/", "create", 201, {"public_key": public_key_line(comment="more")}),
    Endpoint("delete", "/api/keys/{key}/", "personal", 204),
    # quotas: every signed-in caller gets their own
    Endpoint("get", "/api/quota/", "create"),
    # notifications
    Endpoint("get", "/api/webhooks/", "list"),
    Endpoint("get", "/api/webhooks/{webhook}/", "personal"),
    Endpoint("post", "/api/webhooks/", "create", 201, {"endpoint": "https://more.example.com/"}),
    Endpoint("post", "/api/webhooks/{webhook}/test/", "personal", 202),
    Endpoint("delete", "/api/webhooks/{webhook}/", "personal", 204),
    Endpoint("get", "/api/notifications/deliveries/", "list"),
    Endpoint("get", "/api/notifications/deliveries/{delivery}/", "personal"),
    Endpoint("get", "/api/notifications/settings/", "create"),
    Endpoint("put", "/api/notifications/settings/", "create", 200, {"email_enabled": False}),
    Endpoint("post", "/api/notifications/settings/test-email/", "create", 202),
    # blueprints: the owner changes them; whoever sees one launches it (the Env is theirs)
    Endpoint("get", "/api/blueprints/", "list"),
    Endpoint("get", "/api/blueprints/{blueprint}/", "owned"),
    Endpoint("post", "/api/blueprints/", "create", 201, {"name": "more", "text": BLUEPRINT_FILE}),
    Endpoint("patch", "/api/blueprints/{blueprint}/", "owned", 200, {"description": "changed"}),
    Endpoint("patch", "/api/blueprints/{blueprint}/", "publish", 200, {"published": True}),
    Endpoint("post", "/api/blueprints/{blueprint}/share/", "owned", 200, {"users": ["bob"]}),
    Endpoint("delete", "/api/blueprints/{blueprint}/", "owned", 204),
    Endpoint("post", "/api/blueprints/{blueprint}/launch/", "seen", 202, {"name": "launched"}, "env_create"),
    # the audit log: the owner reads the events on her Env; staff with audit.view_auditevent all
    Endpoint("get", "/api/audit/", "list"),
    Endpoint("get", "/api/audit/{event}/", "owned"),
]
# Staff do not see others' either.
PERSONAL_LISTS = ("/api/tokens/", "/api/keys/", "/api/webhooks/", "/api/notifications/deliveries/")

# Mutations reached by POST/PUT/DELETE on their own URL (not a list's POST or a detail's DELETE).
_READABLE = {e.path for e in ENDPOINTS if e.method == "get"}  # a PUT of what a GET reads is no action
ACTIONS = [e for e in ENDPOINTS if e.method in ("post", "put") and e.path.count("/") > 3
           and e.path not in _READABLE]


# Beyond ROLES: staff without a single permission, and staff who may only view.
STAFF_ROLES = ["staff_bare", "staff_viewer"]
VIEW_PERMISSIONS = ("envs.view_env", "vms.view_vm", "vms.view_snapshot", "operations.view_operation",
                    "envs.view_blueprint", "audit.view_auditevent")
# What each action on another user's objects takes (the policy's table must agree:
# test_the_policy_maps_each_action_as_the_matrix_expects).
PERMISSION_OF_KIND = {
    "env_create": "envs.add_env",  # for another user
    **dict.fromkeys(("env_extend", "env_start", "env_stop", "env_set_deny_outgoing", "env_peer",
                     "env_unpeer"), "envs.change_env"),
    "env_destroy": "envs.delete_env",
    "vm_add": "vms.add_vm",
    **dict.fromkeys(("vm_start", "vm_stop", "vm_suspend", "vm_set_blacklist", "vm_set_ports"),
                    "vms.change_vm"),
    "vm_destroy": "vms.delete_vm",
    "snapshot_create": "vms.add_snapshot",
    "snapshot_apply": "vms.change_snapshot",
    "snapshot_destroy": "vms.delete_snapshot",
}


def expected(endpoint: Endpoint, role: str) -> int:
    if role in ("anonymous", "expired", "revoked"):
        return 401
    scope = endpoint.scope
    if scope == "password_only":
        return 401  # a token cannot mint tokens (see accounts/api.py)
    if scope == "for_other":  # alice names herself; anyone else needs envs.add_env
        return endpoint.ok if role in ("owner", "staff") else 403
    if scope == "seen":  # whoever sees it (its owner, staff who may view) may
        return endpoint.ok if role in ("owner", "staff", "staff_viewer") else 404
    if scope == "publish":  # operators holding envs.publish_blueprint; its owner too is refused
        return {"staff": endpoint.ok, "owner": 403, "staff_viewer": 403}.get(role, 404)
    if role == "owner" or scope in ("list", "create", "global"):
        return endpoint.ok
    if scope == "personal":
        return 404  # staff too: tokens and keys are personal
    if role == "staff_viewer":  # sees alice's objects, may not act on them
        return endpoint.ok if endpoint.method == "get" else 403
    return endpoint.ok if role == "staff" else 404  # owned: invisible to bob and to stan


def expected_code(endpoint: Endpoint, role: str) -> str:
    if expected(endpoint, role) == 404:
        return "not_found"
    if expected(endpoint, role) == 403:
        return "forbidden"
    if role in ("expired", "revoked") and endpoint.scope != "password_only":
        return "authentication_failed"  # a token was sent, and it does not work
    return "not_authenticated"


# One world for the module (tests/module_world.py): every case's request is rolled back with
# it, and an action's task, queued on commit, never runs.
shared, world, alice, _clean_test_driver = module_world(build_full_world, "world", "alice")


def _url(endpoint: Endpoint, w) -> str:
    return endpoint.path.format(
        env=w.env.pk, peer=w.peer.pk, running=w.running.pk, stopped=w.stopped.pk, snapshot=w.snapshot.pk,
        op=w.operation.pk, template=w.running.template_id, token=w.token.public_id, key=w.key.pk,
        webhook=w.webhook.pk, delivery=w.delivery.pk, blueprint=w.blueprint.pk, event=_event(w),
        member=w.member.pk,
    )


def _event(w) -> int:
    """The world Env's first audit event (its env.create, by alice)."""
    return AuditEvent.objects.filter(env_id=w.env.pk).order_by("pk").values_list("pk", flat=True).first()


def _visible_ids(endpoint: Endpoint, w) -> set:
    return {
        "/api/envs/": {w.env.pk, w.peer.pk},
        "/api/vms/": {w.running.pk, w.stopped.pk},
        "/api/snapshots/": {w.snapshot.pk},
        "/api/operations/": {w.operation.pk},
        "/api/tokens/": {str(w.token.public_id)},
        "/api/keys/": {w.key.pk},
        "/api/webhooks/": {w.webhook.pk},
        "/api/notifications/deliveries/": {w.delivery.pk},
        "/api/blueprints/": {w.blueprint.pk},
        "/api/audit/": {_event(w)},
    }.get(endpoint.path, set())


def _client(role: str, alice, bob, olga, stan):
    if role == "staff_bare":
        return client_for(stan)
    if role == "staff_viewer":
        return client_for(make_staff("vera", *VIEW_PERMISSIONS))
    return client_as(role, owner=alice, other=bob, staff=olga)


@pytest.mark.parametrize("role", ROLES + STAFF_ROLES)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
def test_it_gives_each_caller_exactly_what_it_should(endpoint, role, world, alice, bob, olga, stan, db_state):
    client = _client(role, alice, bob, olga, stan)
    want = expected(endpoint, role)
    before = db_state()

    response = getattr(client, endpoint.method)(_url(endpoint, world), endpoint.body, format="json")

    assert response.status_code == want, response.content
    if want >= 400:
        assert response.json()["code"] == expected_code(endpoint, role), response.json()
        assert db_state() == before  # a refusal changes nothing
        return
    if want == 202 and endpoint.kind:
        op = response.json()
        assert op["kind"] == endpoint.kind
        assert op["status"] in ("queued", "succeeded")
        assert response["Location"].endswith(f"/api/operations/{op['id']}/")
    if endpoint.scope == "list":
        ids = {item["id"] for item in response.json()["results"]}
        mine = _visible_ids(endpoint, world)
        sees = role == "owner" or (role in ("staff", "staff_viewer") and endpoint.path not in PERSONAL_LISTS)
        assert (mine <= ids) if sees else not (mine & ids), (role, ids)


# Every action on alice's objects that a permission allows.
STAFF_ACTIONS = [e for e in ENDPOINTS if e.kind and e.scope in ("owned", "for_other")]


def test_the_policy_maps_each_action_as_the_matrix_expects():
    assert {e.kind for e in STAFF_ACTIONS} == set(PERMISSION_OF_KIND)
    assert {kind: permissions.ACTIONS[kind] for kind in PERMISSION_OF_KIND} == PERMISSION_OF_KIND


@pytest.mark.parametrize("endpoint", STAFF_ACTIONS, ids=lambda e: e.id)
def test_staff_holding_an_actions_permission_may_take_it(endpoint, world, db_state):
    perm = PERMISSION_OF_KIND[endpoint.kind]
    user = make_staff("pat", *VIEW_PERMISSIONS, perm)

    response = getattr(client_for(user), endpoint.method)(_url(endpoint, world), endpoint.body, format="json")

    assert response.status_code == endpoint.ok, response.content
    op = Operation.objects.get(pk=response.json()["id"])
    assert (op.kind, op.requested_by) == (endpoint.kind, user)


@pytest.mark.parametrize("perm", sorted(set(PERMISSION_OF_KIND.values())))
def test_staff_holding_one_permission_are_refused_every_other_action(perm, world, db_state):
    client = client_for(make_staff("pat", *VIEW_PERMISSIONS, perm))
    others = [e for e in STAFF_ACTIONS if PERMISSION_OF_KIND[e.kind] != perm]
    assert others
    for endpoint in others:
        before = db_state()
        response = getattr(client, endpoint.method)(_url(endpoint, world), endpoint.body, format="json")
        assert response.status_code == 403, (endpoint.id, response.content)
        assert response.json()["code"] == "forbidden"
        assert db_state() == before, endpoint.id


@pytest.mark.parametrize("endpoint", ACTIONS, ids=lambda e: e.id)
def test_it_refuses_get_on_every_mutation(endpoint, world, alice, db_state):
    before = db_state()
    response = client_as("owner", owner=alice, other=None, staff=None).get(_url(endpoint, world))
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert db_state() == before
