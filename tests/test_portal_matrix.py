"""Who gets what, over every portal page and action: the owner, another user, nobody
(also when an API token is sent: the portal signs in by session only), and staff:
an operator (olga, every permission), staff without any permission (stan: alice's
objects are as invisible to him as to bob) and staff who may only view (403 on every
action). Another user's objects are 404, never 403, and a refusal changes nothing.

ROUTES must name every route in ttportal/portal_urls.py: a new page without a row
here fails test_it_covers_every_portal_route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import time_machine
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, reverse

from accounts.models import ApiToken, SshKey
from accounts.services import ssh_key_add, token_create
from envs.blueprints import blueprint_save
from envs.models import EnvMember, Peering
from notifications.services import warn_expiring_due, webhook_create
from operations.models import Operation
from tests.api_support import BLUEPRINT_FILE, build_world
from tests.conftest import make_staff, make_user
from tests.module_world import module_world
from tests.support import public_key_line
from ttportal import portal_urls


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    target: str = ""  # env | peered | member | running | stopped | snapshot | token | key | webhook | link
    # | blueprint | ""
    scope: str = "owned"  # owned | mine (any signed-in user, their own data) | public | link (anyone
    # holding the link, signed in or not) | seen (whoever sees the target: launch a blueprint, save an
    # Env as one's own blueprint) | publish (operators holding envs.publish_blueprint only) | sso (single
    # sign-on, off in these tests: not found)
    data: dict = field(default_factory=dict)
    kind: str = ""  # the operation an accepted POST records
    ok: int = 0  # what an allowed caller gets; 0: 200 for GET, 302 (back to a page) for POST

    @property
    def success(self) -> int:
        return self.ok or (302 if self.method == "post" else 200)

    @property
    def id(self) -> str:
        return f"{self.method.upper()} {self.name}"


ROUTES = [
    # pages
    Route("login", "get", scope="public"),
    Route("logout", "post", scope="public"),
    # Single sign-on: off here (no TT_OIDC_ISSUER), so not found; tests/accounts/test_oidc.py has it on.
    Route("oidc_authentication_init", "get", scope="sso"),
    Route("oidc_authentication_callback", "get", scope="sso"),
    Route("envs:list", "get", scope="mine"),
    Route("envs:create", "get", scope="mine"),
    Route("envs:create", "post", scope="mine", kind="env_create",
          data={"name": "fresh", "lifetime_hours": "1", "vms-TOTAL_FORMS": "1", "vms-INITIAL_FORMS": "0",
                "vms-0-name": "a", "vms-0-template": "TEMPLATE", "vms-0-cpu_num": "1", "vms-0-mem_mb": "128",
                "vms-0-net_kind": "nat"}),
    Route("envs:detail", "get", "env"),
    Route("envs:download", "get", "env"),  # the Env as tt.yaml
    Route("envs:operations", "get", "env"),
    Route("envs:add_vm", "get", "env"),
    Route("vms:detail", "get", "running"),
    Route("vms:guest", "get", "running"),
    Route("vms:templates", "get", scope="mine"),
    Route("accounts:tokens", "get", scope="mine"),
    Route("accounts:ssh_keys", "get", scope="mine"),
    # Env actions
    Route("envs:start", "post", "env", kind="env_start"),
    Route("envs:stop", "post", "env", kind="env_stop"),
    Route("envs:extend", "post", "env", data={"hours": "1"}, kind="env_extend"),
    Route("envs:outgoing", "post", "env", data={"deny": "1"}, kind="env_set_deny_outgoing"),
    Route("envs:idle_suspend", "post", "env", data={"minutes": "30"}),
    Route("envs:destroy", "post", "env", data={"confirm": "demo"}, kind="env_destroy"),
    Route("envs:peer", "post", "env", data={"env": "alice/peer"}, kind="env_peer"),
    Route("envs:unpeer", "post", "peered", kind="env_unpeer"),
    # sharing (tests/test_sharing_portal.py: the members' own matrix)
    Route("envs:share", "post", "env", data={"who": "bob", "role": "viewer"}),
    Route("envs:member_role", "post", "member", data={"role": "operator"}),
    Route("envs:unshare", "post", "member"),
    Route("envs:transfer", "post", "env", data={"owner": "hugo"}),
    Route("envs:add_vm", "post", "env", kind="vm_add",
          data={"name": "extra", "template": "TEMPLATE", "cpu_num": "1", "mem_mb": "128", "net_kind": "nat"}),
    # VM and snapshot actions
    Route("vms:start", "post", "stopped", kind="vm_start"),
    Route("vms:stop", "post", "running", kind="vm_stop"),
    Route("vms:suspend", "post", "running", kind="vm_suspend"),
    Route("vms:destroy", "post", "running", kind="vm_destroy"),
    Route("vms:blacklist", "post", "running", data={"addresses": "192.0.2.7"}, kind="vm_set_blacklist"),
    Route("vms:ports", "post", "running", data={"ports": "22, 8080"}, kind="vm_set_ports"),
    Route("vms:snapshot_create", "post", "running", data={"name": "s2"}, kind="snapshot_create"),
    Route("vms:snapshot_apply", "post", "snapshot", kind="snapshot_apply"),
    Route("vms:snapshot_destroy", "post", "snapshot", kind="snapshot_destroy"),
    # Into the guest (vms/guest_views.py): the world's template has neither exec nor files, so
    # whoever may is sent back to the VM page with the refusal (tests/vms/test_guest_views.py
    # runs them against a guest).
    Route("vms:run", "post", "running", data={"command": "uname -a"}),
    Route("vms:upload", "post", "running", data={"path": "/tmp/", "file": "FILE"}),
    Route("vms:download", "post", "running", data={"path": "/etc/hostname"}),
    # tokens: personal, staff included
    Route("accounts:tokens", "post", scope="mine", data={"name": "more", "expires_in_days": "7"}, ok=200),
    Route("accounts:revoke", "post", "token"),
    # SSH keys: personal too
    Route("accounts:ssh_keys", "post", scope="mine", data={"public_key": public_key_line(comment="more")}),
    Route("accounts:ssh_key_delete", "post", "key"),
    # notifications: personal too; the extend link of an expiry warning works for whoever holds it
    Route("notifications:settings", "get", scope="mine"),
    Route("notifications:settings", "post", scope="mine", data={"endpoint": "https://more.example.com/"},
          ok=200),
    Route("notifications:email", "post", scope="mine", data={"email_enabled": "on"}),
    Route("notifications:email_test", "post", scope="mine"),
    Route("notifications:webhook_test", "post", "webhook"),
    Route("notifications:webhook_delete", "post", "webhook"),
    Route("notifications:extend", "get", "link", scope="link"),
    Route("notifications:extend", "post", "link", scope="link", ok=200),
    # blueprints: the owner changes them; whoever sees one launches it (the Env is theirs)
    Route("envs:blueprints", "get", scope="mine"),
    Route("envs:blueprints", "post", scope="mine", data={"file-name": "more", "file-text": BLUEPRINT_FILE}),
    Route("envs:blueprint", "get", "blueprint"),
    Route("envs:blueprint", "post", "blueprint", data={"file-text": BLUEPRINT_FILE, "file-description": "x"}),
    Route("envs:blueprint_download", "get", "blueprint"),
    Route("envs:blueprint_launch", "post", "blueprint", scope="seen", data={"name": "launched"},
          kind="env_create"),
    Route("envs:blueprint_share", "post", "blueprint", data={"users": "bob"}),
    Route("envs:blueprint_publish", "post", "blueprint", scope="publish", data={"published": "1"}),
    Route("envs:blueprint_delete", "post", "blueprint"),
    Route("envs:save_blueprint", "post", "env", scope="seen", data={"name": "saved"}),
    # Whoever sees an Env clones it, the clones theirs (the peer: the world's Env has snapshots).
    Route("envs:clone", "post", "peer", scope="seen", data={"count": "1"}, kind="env_clone"),
]

ROLES = ["owner", "other", "anonymous", "token_only", "staff", "staff_bare", "staff_viewer"]
VIEW_PERMISSIONS = ("envs.view_env", "vms.view_vm", "vms.view_snapshot", "operations.view_operation",
                    "envs.view_blueprint")


def _route_names(patterns, prefix: str = "") -> set[str]:
    names = set()
    for entry in patterns:
        if isinstance(entry, URLResolver):
            names |= _route_names(entry.url_patterns, f"{entry.namespace}:" if entry.namespace else prefix)
        elif isinstance(entry, URLPattern) and entry.name:
            names.add(prefix + entry.name)
    return names


def test_it_covers_every_portal_route():
    assert _route_names(portal_urls.urlpatterns) == {route.name for route in ROUTES}


def build_portal_world(alice, make_env, run_tasks):
    """build_world and what the portal's routes act on: a token, an SSH key, a webhook, the
    link of an expiry warning, and another Env asked to peer with the first."""
    w = build_world(alice, make_env, run_tasks)
    w.token, w.secret = token_create(user=alice, name="ci")
    w.key = ssh_key_add(user=alice, public_key=public_key_line())
    w.webhook, _ = webhook_create(user=alice, endpoint="https://ci.example.com/hook")
    # The link of a warning about the Env's end (sent as the sweep would, 10 min before it).
    with time_machine.travel(w.env.end_at - timedelta(minutes=10), tick=False):
        (warning,) = warn_expiring_due()
    w.link = warning.payload["extend_url"].rstrip("/").rsplit("/", 1)[1]
    # Another Env of alice's, asked to peer with the first (what unpeer acts on).
    w.peer = make_env(alice, name="peer")
    Peering.objects.create(env_a=w.env, env_b=w.peer, asked_for=w.env, requested_by=alice)
    w.blueprint = blueprint_save(by=alice, name="bp", text=BLUEPRINT_FILE)
    # A member of the Env: hugo, a viewer (whom it can be given to).
    w.member = EnvMember.objects.create(env=w.env, user=make_user("hugo"), role=EnvMember.Role.VIEWER)
    return w


# One world for the module (tests/module_world.py): every case's request is rolled back with
# it, and an action's task, queued on commit, never runs.
shared, world, alice, template, _clean_test_driver = module_world(
    build_portal_world, "world", "alice", "template")


def _user(role: str, alice, bob, olga, stan=None):
    if role == "staff_viewer":
        return make_staff("vera", *VIEW_PERMISSIONS)
    return {"owner": alice, "other": bob, "staff": olga, "staff_bare": stan}.get(role)


def _client(role: str, user, secret: str) -> Client:
    if role == "token_only":  # a valid API token, and no session
        return Client(HTTP_AUTHORIZATION=f"Token {secret}")
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def _url(route: Route, w) -> str:
    target = {
        "env": w.env.pk, "running": w.running.pk, "stopped": w.stopped.pk, "snapshot": w.snapshot.pk,
        "token": w.token.public_id, "key": w.key.pk, "webhook": w.webhook.pk, "link": w.link,
        "blueprint": w.blueprint.pk, "peer": w.peer.pk,
    }.get(route.target)
    if route.target == "peered":
        return reverse(route.name, args=[w.env.pk, w.peer.pk])
    if route.target == "member":
        return reverse(route.name, args=[w.env.pk, w.member.pk])
    return reverse(route.name, args=[target]) if route.target else reverse(route.name)


def _expected(route: Route, role: str) -> int:
    signed_in = role not in ("anonymous", "token_only")
    if route.scope == "link":
        return route.success
    if route.scope == "sso":
        return 404
    if route.scope == "public":
        # Sign-out redirects; sign-in shows its form, or sends a signed-in user on.
        return 302 if route.method == "post" or signed_in else 200
    if not signed_in:
        return 302  # to sign in
    if route.scope == "mine" or role == "owner":
        return route.success if route.scope != "publish" else 403
    if route.scope == "seen":
        return route.success if role in ("staff", "staff_viewer") else 404
    if route.scope == "publish":
        return {"staff": route.success, "staff_viewer": 403}.get(role, 404)
    if route.target in ("token", "key", "webhook"):
        return 404  # staff too: tokens and keys are personal
    if role == "staff_viewer":  # sees alice's objects, may not act on them
        return route.success if route.method == "get" else 403
    return route.success if role == "staff" else 404  # invisible to bob and to stan


def _tokens(alice) -> list:
    return list(ApiToken.objects.filter(user=alice).order_by("public_id").values_list("public_id", "name"))


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_it_gives_each_caller_exactly_what_it_should(route, role, world, alice, bob, olga, stan, template,
                                                    db_state):
    user = _user(role, alice, bob, olga, stan)
    client = _client(role, user, world.secret)
    stand_ins = {"TEMPLATE": lambda: str(template.pk), "FILE": lambda: SimpleUploadedFile("a.txt", b"x")}
    data = {k: stand_ins[v]() if v in stand_ins else v for k, v in route.data.items()}
    before, tokens_before = db_state(), _tokens(alice)

    response = getattr(client, route.method)(_url(route, world), data)

    want = _expected(route, role)
    assert response.status_code == want, response.content[:500]
    if want == 302 and role in ("anonymous", "token_only") and route.scope != "public":
        assert response["Location"].startswith(reverse("login"))
    if route.scope == "link":  # whoever holds it acts as the Env's owner; a GET changes nothing
        if route.method == "post":
            assert Operation.objects.filter(kind="env_extend").latest("pk").requested_by == alice
        else:
            assert db_state() == before
        return
    if want < 400 and route.scope != "public" and role not in ("anonymous", "token_only"):
        if route.kind:  # an accepted action is recorded as asked by this caller
            assert Operation.objects.filter(kind=route.kind).latest("pk").requested_by == user
        if route.name == "accounts:tokens" and route.method == "post":
            assert ApiToken.objects.filter(user=user, name="more").exists()
        if route.name == "accounts:ssh_keys" and route.method == "post":
            assert SshKey.objects.filter(user=user, name="more").exists()
        return
    if route.scope != "public":
        assert db_state() == before  # a refusal changes nothing
        assert _tokens(alice) == tokens_before


# Routes that only ever change something (a page that also takes GET shows its form then).
_PAGES = {route.name for route in ROUTES if route.method == "get"}
MUTATIONS = [route for route in ROUTES if route.method == "post" and route.name not in _PAGES]


@pytest.mark.parametrize("route", MUTATIONS, ids=lambda r: r.id)
def test_it_refuses_get_on_every_mutation(route, world, alice, db_state):
    client = _client("owner", alice, world.secret)
    before = db_state()
    assert client.get(_url(route, world)).status_code == 405
    assert db_state() == before
