"""Sharing an Env, over every portal page and action (tests/test_portal_matrix.py's routes):
a member of alice's Env (a viewer, an operator, an admin, or an operator through a group)
gets exactly what their role holds, is refused the rest with a 403 that changes nothing,
and sees none of alice's other things; a user in no role sees none of it. My Envs lists a
shared Env with the role, and the Env page shows the role and only the buttons it may use."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from envs.models import EnvMember
from operations.models import Operation
from tests.conftest import make_user
from tests.module_world import module_world
from tests.test_portal_matrix import ROUTES, Route, _expected, _url, build_portal_world
from ttportal import permissions

shared, world, alice, template, _clean_test_driver = module_world(
    build_portal_world, "world", "alice", "template")

MEMBERS = {
    "viewer": ("viewer", False),
    "operator": ("operator", False),
    "admin": ("admin", False),
    "group_operator": ("operator", True),
    "none": (None, False),
}
ENV_TARGETS = ("env", "peered", "member", "running", "stopped", "snapshot", "peer")
# The action each route without an operation kind takes (the others: their kind).
ACTION_OF_ROUTE = {
    "envs:idle_suspend": "env_set_idle_suspend",
    "envs:share": "env_share", "envs:member_role": "env_share", "envs:unshare": "env_share",
    "envs:transfer": "env_transfer",
    "vms:run": "vm_exec", "vms:upload": "vm_files", "vms:download": "vm_files",
}
# Routes every member who sees the Env may take: they act on their own things (a blueprint
# of the Env's shape is theirs), or the way in answers why not (the template has no exec).
SEEN_ROUTES = {"envs:save_blueprint"}


def member_expected(route: Route, member: str) -> int:
    role = MEMBERS[member][0]
    if route.target not in ENV_TARGETS or role is None:
        return _expected(route, "other")
    if route.method == "get" or route.name in SEEN_ROUTES:
        return route.success
    action = ACTION_OF_ROUTE.get(route.name, route.kind)
    assert action, route.id
    return route.success if permissions.role_allows(role, action) else 403


def _member(member: str, w):
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
    client = Client()
    client.force_login(user)
    return client, user


@pytest.mark.parametrize("member", list(MEMBERS))
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_a_member_gets_exactly_what_their_role_holds(route, member, world, bob, template, db_state):
    client, user = _member(member, world)
    stand_ins = {"TEMPLATE": lambda: str(template.pk), "FILE": lambda: SimpleUploadedFile("a.txt", b"x")}
    data = {k: stand_ins[v]() if v in stand_ins else v for k, v in route.data.items()}
    before = db_state()

    response = getattr(client, route.method)(_url(route, world), data)

    want = member_expected(route, member)
    assert response.status_code == want, response.content[:500]
    if want >= 400:
        assert db_state() == before  # a refusal changes nothing
    elif route.kind and route.method == "post" and route.scope != "link":
        assert Operation.objects.filter(kind=route.kind).latest("pk").requested_by == user


@pytest.mark.parametrize("member", ["viewer", "operator", "admin", "group_operator"])
def test_my_envs_lists_a_shared_env_with_my_role(member, world):
    client, _ = _member(member, world)
    page = client.get(reverse("envs:list")).content.decode()
    assert f'id="env-{world.env.pk}"' in page
    assert f"{MEMBERS[member][0]} · alice" in page


def test_the_env_page_shows_my_role_and_only_my_buttons(world):
    viewer, _ = _member("viewer", world)
    page = viewer.get(reverse("envs:detail", args=[world.env.pk])).content.decode()
    assert "Your role" in page and ">viewer<" in page
    for hidden in ("envs:destroy", "envs:clone", "envs:add_vm", "envs:share", "envs:extend"):
        assert reverse(hidden, args=[world.env.pk]) not in page, hidden

    admin, _ = _member("admin", world)
    page = admin.get(reverse("envs:detail", args=[world.env.pk])).content.decode()
    for shown in ("envs:destroy", "envs:clone", "envs:add_vm", "envs:share", "envs:extend"):
        assert reverse(shown, args=[world.env.pk]) in page, shown
    assert reverse("envs:transfer", args=[world.env.pk]) not in page  # the owner's alone

    owner = Client()
    owner.force_login(world.env.owner)
    page = owner.get(reverse("envs:detail", args=[world.env.pk])).content.decode()
    assert reverse("envs:transfer", args=[world.env.pk]) in page  # to hugo, the world's member
