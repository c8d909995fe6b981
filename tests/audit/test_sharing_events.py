"""Sharing leaves its events (envs/sharing.py): share, a role changed, unshare and a
transfer, each one event with its actor and whom it concerns, a refusal recorded as
refused; an Env's admin members read its events, its viewers do not."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from envs.models import Env
from tests.api_support import client_for
from tests.conftest import make_user


@pytest.fixture
def env(make_env, alice) -> Env:
    return make_env(alice)


@pytest.fixture
def charlie(db):
    return make_user("charlie")


def events(verb: str) -> list[tuple]:
    return [(e.username, e.result, e.code, e.object_type, e.object_id, e.detail)
            for e in AuditEvent.objects.filter(verb=verb).order_by("pk")]


def test_each_sharing_action_is_one_event(env, alice, bob):
    api = client_for(alice)
    members = f"/api/envs/{env.pk}/members/"
    member = api.post(members, {"user": "bob", "role": "viewer"}, format="json").json()["id"]
    assert api.patch(f"{members}{member}/", {"role": "admin"}, format="json").status_code == 200
    assert api.post(f"/api/envs/{env.pk}/transfer/", {"owner": "bob"}, format="json").status_code == 200
    pk = str(env.pk)
    assert events("env.share") == [
        ("alice", "ok", "", "env", pk, {"member": "bob", "role": "viewer"}),
        ("alice", "ok", "", "env", pk, {"member": "bob", "role": "admin"})]
    assert events("env.transfer") == [("alice", "ok", "", "env", pk, {"new_owner": "bob"})]
    # alice is an admin member now: bob, the new owner, removes her.
    hers = client_for(bob).get(members).json()[0]
    assert client_for(bob).delete(f"{members}{hers['id']}/").status_code == 204
    assert events("env.unshare") == [("bob", "ok", "", "env", pk, {"member": "alice"})]


def test_a_refused_share_is_recorded_refused_and_changes_nothing(env, alice, bob, charlie):
    api = client_for(alice)
    api.post(f"/api/envs/{env.pk}/members/", {"user": "bob", "role": "viewer"}, format="json")
    refused = client_for(bob).post(f"/api/envs/{env.pk}/members/", {"user": "charlie", "role": "admin"},
                                   format="json")
    assert refused.status_code == 403
    assert events("env.share")[-1][:3] == ("bob", "refused", "forbidden")
    assert env.members.count() == 1


def test_admin_members_read_the_envs_events_viewers_do_not(env, alice, bob, charlie):
    api = client_for(alice)
    api.post(f"/api/envs/{env.pk}/members/", {"user": "bob", "role": "admin"}, format="json")
    api.post(f"/api/envs/{env.pk}/members/", {"user": "charlie", "role": "viewer"}, format="json")
    seen_by_admin = client_for(bob).get(f"/api/audit/?env={env.pk}").json()["results"]
    assert {e["verb"] for e in seen_by_admin} >= {"env.create", "env.share"}
    seen_by_viewer = client_for(charlie).get(f"/api/audit/?env={env.pk}").json()["results"]
    assert [e for e in seen_by_viewer if e["env"] == env.pk] == []
