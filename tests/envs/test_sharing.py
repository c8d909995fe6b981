"""Sharing an Env (envs/sharing.py) and its API (`/api/envs/{id}/members/`, `/transfer/`):
clear refusals naming the field, quotas charged to the owner whoever adds, removal at once,
and the transfer of ownership under the new owner's quota, atomic."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts.models import UserQuota
from envs import sharing
from envs.models import Env, EnvMember
from operations.models import Operation
from tests.api_support import client_for
from tests.conftest import make_user
from ttportal.errors import ConflictingInput, Forbidden, InvalidInput, QuotaExceeded
from vms.models import Snapshot, Vm
from vms.new_vms import NewVm
from vms.services import vm_add
from vms.usage import usage_of


@pytest.fixture
def env(make_env, alice) -> Env:
    return make_env(alice, vms=2)


def members_url(env, member=None) -> str:
    return f"/api/envs/{env.pk}/members/" + (f"{member.pk}/" if member else "")


# --- the API ------------------------------------------------------------------------------


def test_the_owner_shares_lists_changes_and_removes(env, alice, bob):
    Group.objects.create(name="devs")
    client = client_for(alice)

    added = client.post(members_url(env), {"user": "bob", "role": "viewer"}, format="json")
    assert added.status_code == 201, added.content
    body = added.json()
    assert (body["user"], body["group"], body["role"], body["granted_by"]) == ("bob", None, "viewer", "alice")
    group = client.post(members_url(env), {"group": "devs", "role": "operator"}, format="json")
    assert group.status_code == 201, group.content

    listed = client.get(members_url(env)).json()
    assert [(m["user"], m["group"], m["role"]) for m in listed] == [("bob", None, "viewer"),
                                                                    (None, "devs", "operator")]
    member = EnvMember.objects.get(pk=added.json()["id"])
    changed = client.patch(members_url(env, member), {"role": "admin"}, format="json")
    assert (changed.status_code, changed.json()["role"]) == (200, "admin")
    assert client.delete(members_url(env, member)).status_code == 204
    assert not EnvMember.objects.filter(pk=member.pk).exists()
    assert client_for(bob).get(f"/api/envs/{env.pk}/").status_code == 404  # gone at once


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"user": "nobody", "role": "viewer"}, "user", "no active user is named 'nobody'"),
    ({"group": "nogroup", "role": "viewer"}, "group", "no group is named 'nogroup'"),
    ({"user": "bob", "role": "boss"}, "role", "must be one of viewer, operator, admin"),
    ({"user": "alice", "role": "viewer"}, "user", "owns this Env"),
    ({"user": "bob", "group": "devs", "role": "viewer"}, "", ""),
    ({"role": "viewer"}, "user", "give a user or a group"),
])
def test_bad_input_is_refused_naming_the_field(env, alice, bob, body, field, words, db_state):
    Group.objects.create(name="devs")
    before = db_state()
    response = client_for(alice).post(members_url(env), body, format="json")
    assert response.status_code in (400, 422), response.content
    if field:
        assert response.json()["field"] == field, response.json()
        assert words in response.json()["message"]
    assert db_state() == before


def test_a_duplicate_is_refused_naming_the_field(env, alice, bob):
    client = client_for(alice)
    assert client.post(members_url(env), {"user": "bob", "role": "viewer"}, format="json").status_code == 201
    again = client.post(members_url(env), {"user": "bob", "role": "admin"}, format="json")
    assert again.status_code == 422
    assert again.json()["field"] == "user"
    assert "member of this Env already" in again.json()["message"]


def test_the_database_holds_user_xor_group_and_one_row_each(env, bob):
    group = Group.objects.create(name="devs")
    with pytest.raises(IntegrityError), transaction.atomic():
        EnvMember.objects.create(env=env, user=bob, group=group, role="viewer")
    with pytest.raises(IntegrityError), transaction.atomic():
        EnvMember.objects.create(env=env, role="viewer")
    EnvMember.objects.create(env=env, user=bob, role="viewer")
    with pytest.raises(IntegrityError), transaction.atomic():
        EnvMember.objects.create(env=env, user=bob, role="admin")


def test_a_non_admin_member_cannot_share_nor_learn_who_exists(env, bob):
    EnvMember.objects.create(env=env, user=bob, role="operator")
    response = client_for(bob).post(members_url(env), {"user": "nobody", "role": "admin"}, format="json")
    assert response.status_code == 403  # not "no such user": names are not probed this way
    assert "your role on this Env is operator" in response.json()["message"]


def test_a_member_may_leave(env, bob):
    member = EnvMember.objects.create(env=env, user=bob, role="viewer")
    assert client_for(bob).delete(members_url(env, member)).status_code == 204
    assert not EnvMember.objects.filter(pk=member.pk).exists()


# --- quotas stay the owner's ----------------------------------------------------------------


def test_a_vm_an_admin_member_adds_is_charged_to_the_owner(env, alice, bob, template, run_tasks):
    EnvMember.objects.create(env=env, user=bob, role="admin")
    before_alice, before_bob = usage_of(alice), usage_of(bob)
    with run_tasks():
        op = vm_add(env=env, spec=NewVm(name="extra", template=template.name, cpu_num=2), by=bob)
    assert op.requested_by == bob
    assert (usage_of(alice).vms, usage_of(alice).vcpus) == (before_alice.vms + 1, before_alice.vcpus + 2)
    assert usage_of(bob) == before_bob


def test_the_owners_quota_binds_a_members_add(env, alice, bob, template):
    EnvMember.objects.create(env=env, user=bob, role="admin")
    UserQuota.objects.create(user=alice, vms=2)  # she has 2
    with pytest.raises(QuotaExceeded) as refused:
        vm_add(env=env, spec=NewVm(name="extra", template=template.name), by=bob)
    assert refused.value.quota == "vms"
    assert "alice may have at most 2" in refused.value.message


# --- transfer -------------------------------------------------------------------------------


def test_the_owner_gives_the_env_to_a_member(env, alice, bob):
    EnvMember.objects.create(env=env, user=bob, role="operator")
    response = client_for(alice).post(f"/api/envs/{env.pk}/transfer/", {"owner": "bob"}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["owner"], response.json()["role"]) == ("bob", "admin")  # alice's now
    env.refresh_from_db()
    assert env.owner == bob
    rows = EnvMember.objects.filter(env=env).values_list("user__username", "role")
    assert list(rows) == [("alice", "admin")]
    assert usage_of(bob).vms == 2 and usage_of(alice).vms == 0


def test_a_transfer_needs_the_new_owners_quota_for_all_it_holds(env, alice, bob, run_tasks, db_state):
    from tests.support import take_snapshot

    take_snapshot(env.vms.order_by("name").first(), run_tasks, "s1")
    EnvMember.objects.create(env=env, user=bob, role="viewer")
    UserQuota.objects.create(user=bob, snapshots=0)
    before = db_state()
    response = client_for(alice).post(f"/api/envs/{env.pk}/transfer/", {"owner": "bob"}, format="json")
    assert response.status_code == 403, response.content  # the API's answer to a quota
    assert (response.json()["code"], response.json()["quota"]) == ("quota_exceeded", "snapshots")
    assert db_state() == before
    assert Env.objects.get(pk=env.pk).owner == alice


def test_a_transfer_refuses_whoever_is_not_the_owner_or_staff(env, bob, olga):
    EnvMember.objects.create(env=env, user=bob, role="admin")
    carol = make_user("carol")
    EnvMember.objects.create(env=env, user=carol, role="viewer")
    with pytest.raises(Forbidden):
        sharing.env_transfer(env=env, new_owner=carol, by=bob)  # an admin member may not
    assert sharing.env_transfer(env=env, new_owner=carol, by=olga).owner == carol  # an operator may


def test_a_transfer_to_a_non_member_or_clashing_name_is_refused(env, alice, bob, make_env):
    with pytest.raises(ConflictingInput, match="not a member"):
        sharing.env_transfer(env=env, new_owner=bob, by=alice)
    EnvMember.objects.create(env=env, user=bob, role="viewer")
    make_env(bob, name=env.name)
    with pytest.raises(ConflictingInput, match="has a live Env named demo"):
        sharing.env_transfer(env=env, new_owner=bob, by=alice)


def test_a_group_member_may_receive_it(env, alice, bob):
    group = Group.objects.create(name="devs")
    bob.groups.add(group)
    EnvMember.objects.create(env=env, group=group, role="viewer")
    assert sharing.env_transfer(env=env, new_owner=bob, by=alice).owner == bob


# --- lists and the policy -----------------------------------------------------------------


def test_every_list_shows_envs_shared_with_me_or_my_group(env, alice, bob, run_tasks):
    from tests.support import take_snapshot

    take_snapshot(env.vms.order_by("name").first(), run_tasks, "s1")
    group = Group.objects.create(name="devs")
    bob.groups.add(group)
    assert not Env.objects.visible_to(bob).exists()
    EnvMember.objects.create(env=env, group=group, role="viewer")
    assert list(Env.objects.visible_to(bob)) == [env]
    assert set(Vm.objects.visible_to(bob)) == set(env.vms.all())
    assert Snapshot.objects.visible_to(bob).count() == 1
    assert set(Operation.objects.visible_to(bob)) == set(Operation.objects.filter(env=env))
    assert not Env.objects.visible_to(make_user("carol")).exists()


def test_visible_to_is_one_query_with_no_duplicates(env, bob):
    group = Group.objects.create(name="devs")
    bob.groups.add(group)
    EnvMember.objects.create(env=env, group=group, role="viewer")
    EnvMember.objects.create(env=env, user=bob, role="operator")  # two ways in: still one row each
    with CaptureQueriesContext(connection) as ctx:
        envs = list(Env.objects.visible_to(bob))
        vms = list(Vm.objects.visible_to(bob))
    assert len(envs) == 1 and len(vms) == 2
    assert len(ctx.captured_queries) == 2


def test_the_strongest_of_own_and_group_roles_wins(env, bob):
    group = Group.objects.create(name="devs")
    bob.groups.add(group)
    EnvMember.objects.create(env=env, group=group, role="admin")
    EnvMember.objects.create(env=env, user=bob, role="viewer")
    assert env.role_of(bob) == "admin"


def test_the_role_is_checked_by_the_one_policy(env, bob):
    from vms import policy

    EnvMember.objects.create(env=env, user=bob, role="operator")
    policy.check_can_manage(bob, env, "vm_start")
    with pytest.raises(Forbidden, match="role on this Env is operator: vm_destroy takes a stronger role"):
        policy.check_can_manage(bob, env, "vm_destroy")
    with pytest.raises(InvalidInput):
        sharing.check_role("owner")


def test_the_admin_shows_the_members_on_the_env(env, bob, olga):
    from django.test import Client
    from django.urls import reverse

    EnvMember.objects.create(env=env, user=bob, role="operator", granted_by=env.owner)
    client = Client()
    client.force_login(olga)
    page = client.get(reverse("admin:envs_env_change", args=[env.pk])).content.decode()
    assert "Members (shared with" in page
    assert "bob" in page and "operator" in page
