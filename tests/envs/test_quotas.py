"""Quotas on Envs: env_create (live Envs, VMs, vCPUs, memory, disk, lifetime) and env_extend
(the longest lifetime from the Env's start, the longest single extension), through the
service, the portal, the API and the admin alike; staff bound by the owner's quota unless
they tick the admin's explicit override; the Quota panel and GET /api/quota/."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import GroupQuota, UserQuota
from envs.kinds import EnvKind
from envs.models import Env
from envs.services import env_create, env_destroy, env_extend
from operations.models import Operation
from tests.admin_support import make_operator, messages_of, post_action
from tests.api_support import client_for
from tests.quota_support import INTERFACES, assert_refused, create_env, new_vms
from tests.support import T0, refused
from ttportal.errors import Forbidden, QuotaExceeded

pytestmark = pytest.mark.usefixtures("frozen_clock")

# quota, its setting, its limit; the VMs of Envs that fill it exactly, then one more request.
COUNTED = [
    ("envs", "TT_QUOTA_ENVS", 2, [{}, {}], {}, 1,
     "at most 2 of live Envs; 2 in use, and this request adds 1"),
    ("vms", "TT_QUOTA_VMS", 3, [{"count": 3}], {}, 1, "at most 3 of live VMs; 3 in use"),
    ("vcpus", "TT_QUOTA_VCPUS", 4, [{"count": 2, "cpu_num": 2}], {"cpu_num": 1}, 1,
     "at most 4 of vCPUs; 4 in use, and this request adds 1"),
    ("mem_mb", "TT_QUOTA_MEM_MB", 512, [{"count": 2, "mem_mb": 256}], {"mem_mb": 64}, 64,
     "at most 512 MiB of memory; 512 MiB in use, and this request adds 64 MiB"),
    ("disk_mb", "TT_QUOTA_DISK_MB", 100, [{"count": 2, "disk_mb": 50}], {}, 20,
     "at most 100 MiB of disk; 100 MiB in use, and this request adds 20 MiB"),
]


def _vms(template, prefix: str, count: int = 1, **fields):
    return new_vms(template, count, prefix=prefix, **fields)


@pytest.mark.parametrize("interface", INTERFACES)
@pytest.mark.parametrize(("quota", "setting", "limit", "fill", "more", "adds", "says"), COUNTED,
                         ids=[case[0] for case in COUNTED])
def test_it_creates_envs_up_to_each_quota_then_refuses(
    interface, quota, setting, limit, fill, more, adds, says, alice, template, settings, db_state,
):
    setattr(settings, setting, limit)
    for i, fields in enumerate(fill):  # exactly up to the limit: allowed
        fields = dict(fields)
        outcome = create_env(interface, alice, template, name=f"fill{i}",
                             vms=_vms(template, "v", fields.pop("count", 1), **fields))
        assert outcome.accepted, outcome
    before = db_state()
    outcome = create_env(interface, alice, template, name="more", vms=_vms(template, "m", **more))
    assert_refused(outcome, interface, quota=quota, limit=limit, used=limit, requested=adds,
                   says=f"alice may have {says}")
    assert db_state() == before  # no Env, no VM, no operation


@pytest.mark.parametrize("interface", INTERFACES)
def test_it_bounds_a_new_envs_lifetime(interface, alice, template, settings, db_state):
    settings.TT_QUOTA_MAX_LIFETIME = 7200
    assert create_env(interface, alice, template, name="two-hours", vms=_vms(template, "a"),
                      lifetime=7200).accepted
    before = db_state()
    outcome = create_env(interface, alice, template, name="longer", vms=_vms(template, "a"), lifetime=9000)
    assert_refused(outcome, interface, quota="lifetime", limit=7200, used=0, requested=9000,
                   says="alice's Envs may live at most 7200 s from their start; this one would live 9000 s")
    assert db_state() == before


def test_it_caps_the_default_lifetime_at_the_owners_longest(alice, template, settings):
    settings.TT_QUOTA_MAX_LIFETIME = 1800  # shorter than TT_DEFAULT_ENV_LIFETIME (4 h)
    env = env_create(owner=alice, by=alice, name="short", vms=_vms(template, "a")).env
    assert env.end_at - env.start_at == timedelta(seconds=1800)


def test_it_counts_only_the_owners_live_envs_and_vms(alice, bob, make_env, run_tasks, settings, template):
    settings.TT_QUOTA_ENVS, settings.TT_QUOTA_VMS = 1, 2
    make_env(bob, vms=2)  # another owner's use is not alice's
    env = make_env(alice, vms=2)
    with pytest.raises(QuotaExceeded):
        env_create(owner=alice, by=alice, name="second", vms=_vms(template, "v"))
    with run_tasks():
        env_destroy(env=env, by=alice)
    assert Env.objects.get(pk=env.pk).status == Env.Status.DESTROYED
    make_env(alice, name="again", vms=2)  # the destroyed Env and its VMs count no more


def test_it_checks_the_input_before_the_quota(alice, template, settings):
    settings.TT_QUOTA_ENVS = 0
    with pytest.raises(Exception) as caught:
        env_create(owner=alice, by=alice, name="Bad Name", vms=_vms(template, "a"))
    assert not isinstance(caught.value, QuotaExceeded)
    with pytest.raises(QuotaExceeded):
        env_create(owner=alice, by=alice, name="fine", vms=_vms(template, "a"))


# --- overrides, through the services ------------------------------------------------------


def test_it_applies_a_user_override_before_any_group(alice, bob, template, settings):
    settings.TT_QUOTA_ENVS = 1
    group = Group.objects.create(name="team")
    alice.groups.add(group)
    bob.groups.add(group)
    GroupQuota.objects.create(group=group, envs=3)
    UserQuota.objects.create(user=alice, envs=2, vms=None)  # fewer than her group's: hers wins
    for i in range(2):
        env_create(owner=alice, by=alice, name=f"a{i}", vms=_vms(template, "v"))
    with pytest.raises(QuotaExceeded) as caught:
        env_create(owner=alice, by=alice, name="a2", vms=_vms(template, "v"))
    assert (caught.value.quota, caught.value.limit) == ("envs", 2)
    for i in range(3):  # bob has the group's
        env_create(owner=bob, by=bob, name=f"b{i}", vms=_vms(template, "v"))
    with pytest.raises(QuotaExceeded):
        env_create(owner=bob, by=bob, name="b3", vms=_vms(template, "v"))


# --- staff acting for a user --------------------------------------------------------------


def test_staff_are_bound_by_the_owners_quota(alice, olga, template, settings, db_state):
    settings.TT_QUOTA_ENVS = 1
    env_create(owner=alice, by=alice, name="mine", vms=_vms(template, "v"))
    with refused(db_state, QuotaExceeded) as caught:
        env_create(owner=alice, by=olga, name="for-alice", vms=_vms(template, "v"))
    assert "alice may have at most 1 of live Envs" in caught.value.message
    response = client_for(olga).post("/api/envs/", {"name": "for-alice", "owner": "alice",
                                                   "vms": [{"name": "v", "template": "tt/busybox"}]})
    assert response.status_code == 403
    assert response.json()["code"] == "quota_exceeded"
    # Staff's own quota is another matter: olga may still create her own.
    env_create(owner=olga, by=olga, name="hers", vms=_vms(template, "v"))


def test_staff_may_say_to_ignore_the_owners_quota_and_it_is_recorded(alice, olga, template, settings):
    settings.TT_QUOTA_ENVS = 0
    op = env_create(owner=alice, by=olga, name="anyway", vms=_vms(template, "v"), ignore_quota=True)
    assert op.params["ignore_quota"] is True
    assert op.requested_by == olga
    # Without it, the record says nothing of quotas.
    settings.TT_QUOTA_ENVS = 5
    op = env_create(owner=alice, by=olga, name="bound", vms=_vms(template, "v"))
    assert "ignore_quota" not in op.params


def test_only_staff_may_ignore_a_quota(alice, bob, stan, template, db_state, make_env):
    rule = "only staff with the permission accounts.change_userquota may ignore the owner's quota"
    with refused(db_state, Forbidden) as caught:
        env_create(owner=alice, by=alice, name="mine", vms=_vms(template, "v"), ignore_quota=True)
    assert caught.value.message == rule
    env = make_env(alice)
    with refused(db_state, Forbidden):
        env_extend(env=env, by=alice, extend_by=timedelta(hours=1), ignore_quota=True)
    # Staff without the permission neither: is_staff alone is no licence.
    stan.user_permissions.add(*Permission.objects.filter(codename="change_env"))
    with refused(db_state, Forbidden) as caught:
        env_extend(env=env, by=stan, extend_by=timedelta(hours=1), ignore_quota=True)
    assert caught.value.message == rule


def test_the_api_never_offers_to_ignore_a_quota(alice, olga, template, db_state):
    before = db_state()
    for client in (client_for(alice), client_for(olga)):
        response = client.post("/api/envs/", {"name": "x", "ignore_quota": True,
                                              "vms": [{"name": "v", "template": "tt/busybox"}]})
        assert response.status_code == 400
        assert response.json()["field"] == "ignore_quota"
    assert db_state() == before


# --- the admin's "Add Env" ----------------------------------------------------------------


def test_the_admin_add_page_offers_the_explicit_override(client, alice, template, settings, db_state):
    root = make_operator(client)
    settings.TT_QUOTA_ENVS = 0
    data = {"owner": str(alice.pk), "name": "demo", "lifetime_hours": "2", "idempotency_key": "",
            "vms-TOTAL_FORMS": "1", "vms-INITIAL_FORMS": "0", "vms-MIN_NUM_FORMS": "1",
            "vms-MAX_NUM_FORMS": "100", "vms-0-name": "web", "vms-0-template": str(template.pk),
            "vms-0-cpu_num": "1", "vms-0-mem_mb": "128", "vms-0-net_kind": "nat"}
    add = reverse("admin:envs_env_add")
    assert "Ignore the owner&#x27;s quota" in client.get(add).content.decode()
    before = db_state()
    response = client.post(add, data)
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "quota exceeded: alice may have at most 0 of live Envs; 0 in use, and this request adds 1"]
    assert db_state() == before
    response = client.post(add, {**data, "ignore_quota": "on"})
    assert response.status_code == 302
    op = Operation.objects.get(kind=EnvKind.ENV_CREATE)
    assert (op.env.owner, op.requested_by, op.params["ignore_quota"]) == (alice, root, True)


# --- extending ----------------------------------------------------------------------------


def _extend(interface: str, env: Env, seconds: int, client=None):
    """Move the end `seconds` later than it is (the API's lifetime counts from now: T0)."""
    owner = env.owner
    if interface == "service":
        try:
            env_extend(env=env, by=owner, extend_by=timedelta(seconds=seconds))
        except QuotaExceeded as exc:
            return False, exc.message, None
        return True, "", None
    if interface == "api":
        env.refresh_from_db()
        lifetime = int((env.end_at - timezone.now()).total_seconds()) + seconds
        response = client_for(owner).post(f"/api/envs/{env.pk}/extend/", {"lifetime": lifetime})
        return response.status_code == 202, response.json().get("message", ""), response
    client.force_login(owner)
    response = client.post(reverse("envs:extend", args=[env.pk]), {"hours": str(seconds / 3600)}, follow=True)
    messages = [str(m) for m in response.context["messages"]]
    refusal = next((m for m in messages if m.startswith("quota exceeded")), "")
    return not refusal, refusal, response


@pytest.mark.parametrize("interface", ["service", "portal", "api"])
def test_it_bounds_each_extension(interface, client, alice, make_env, settings):
    settings.TT_QUOTA_MAX_EXTENSION = 3600
    env = make_env(alice, lifetime=3600)
    ok, _, _ = _extend(interface, env, 3600, client)
    assert ok
    ops = Operation.objects.count()
    ok, message, response = _extend(interface, env, 5400, client)
    assert not ok
    assert message == ("quota exceeded: alice may extend an Env by at most 3600 s at a time; "
                       "this request extends it by 5400 s")
    if interface == "api":
        assert response.status_code == 403
        assert response.json() == {"code": "quota_exceeded", "message": message, "quota": "extension",
                                   "limit": 3600, "used": 0, "requested": 5400}
    env.refresh_from_db()
    assert env.end_at == T0 + timedelta(hours=2)
    assert Operation.objects.count() == ops


@pytest.mark.parametrize("interface", ["service", "portal", "api"])
def test_it_bounds_the_lifetime_from_the_envs_start(interface, client, alice, make_env, settings,
                                                    time_machine):
    settings.TT_QUOTA_MAX_LIFETIME = 3 * 3600
    env = make_env(alice, lifetime=2 * 3600)
    time_machine.shift(1800)  # counted from the start, not from now
    ok, _, _ = _extend(interface, env, 3600, client)
    assert ok
    ok, message, response = _extend(interface, env, 360, client)
    assert not ok
    assert message == ("quota exceeded: alice's Envs may live at most 10800 s from their start; "
                       "this one would live 11160 s")
    if interface == "api":
        body = response.json()
        numbers = (body["quota"], body["limit"], body["used"], body["requested"])
        assert numbers == ("lifetime", 10800, 10800, 360)
    env.refresh_from_db()
    assert env.end_at == T0 + timedelta(hours=3)


def test_it_lets_an_env_over_a_lowered_quota_end_sooner(alice, make_env, settings):
    env = make_env(alice, lifetime=4 * 3600)
    settings.TT_QUOTA_MAX_LIFETIME = 3600
    env_extend(env=env, by=alice, end_at=T0 + timedelta(hours=3))  # shorter: allowed
    env.refresh_from_db()
    assert env.end_at == T0 + timedelta(hours=3)
    with pytest.raises(QuotaExceeded):
        env_extend(env=env, by=alice, end_at=T0 + timedelta(hours=3, minutes=1))


def test_the_admin_extend_action_is_bound_unless_the_box_is_ticked(client, alice, make_env, settings):
    make_operator(client)
    settings.TT_QUOTA_MAX_EXTENSION = 3600
    env = make_env(alice, lifetime=3600)
    envs = reverse("admin:envs_env_changelist")
    response = post_action(client, envs, "extend_by_a_day", [env])
    assert messages_of(response) == [("error", f"{env}: quota exceeded: alice may extend an Env by at most "
                                               "3600 s at a time; this request extends it by 86400 s")]
    assert not Operation.objects.filter(kind=EnvKind.ENV_EXTEND).exists()
    response = client.post(envs, {"action": "extend_by_a_day", "_selected_action": [str(env.pk)],
                                  "index": "0", "ignore_quota": "on"}, follow=True)
    assert ("success", "Extended by a day, the owners' quotas ignored: 1 env.") in messages_of(response)
    op = Operation.objects.get(kind=EnvKind.ENV_EXTEND)
    assert op.params["ignore_quota"] is True
    env.refresh_from_db()
    assert env.end_at == T0 + timedelta(hours=25)
    assert "Ignore the owner&#x27;s quota" in client.get(envs).content.decode()  # in the action bar


# --- what the user sees: the Quota panel and GET /api/quota/ ---------------------------------


def test_the_portal_shows_use_against_limits(client, alice, make_env, settings):
    settings.TT_QUOTA_ENVS = 1
    make_env(alice, vms=2)
    client.force_login(alice)
    for page in ("envs:list", "envs:create"):
        response = client.get(reverse(page))
        body = response.content.decode()
        assert "Your quota" in body
        lines = {line.name: line for line in response.context["quota"]}
        assert (lines["envs"].used, lines["envs"].limit, lines["envs"].full) == (1, 1, True)
        assert (lines["vms"].used, lines["vms"].limit) == (2, 20)
        assert (lines["mem_mb"].used, lines["disk_mb"].used) == (512, 40)
        assert 'id="quota-envs"' in body and "full" in body


def test_the_panel_costs_two_queries(alice, make_env):
    from accounts.quotas import report

    make_env(alice, vms=3)
    with CaptureQueriesContext(connection) as ctx:
        report(alice)
    assert len(ctx.captured_queries) == 2


def test_the_api_tells_each_user_their_quota(alice, bob, make_env):
    group = Group.objects.create(name="big")
    alice.groups.add(group)
    GroupQuota.objects.create(group=group, vcpus=64)
    UserQuota.objects.create(user=alice, envs=9)
    make_env(alice, vms=2)
    response = client_for(alice).get("/api/quota/")
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == "alice"
    assert body["envs"] == {"limit": 9, "used": 1, "source": "user"}
    assert body["vcpus"] == {"limit": 64, "used": 2, "source": "group big"}
    assert body["vms"] == {"limit": 20, "used": 2, "source": "default"}
    assert body["snapshots"] == {"limit": 50, "used": 0, "source": "default"}
    assert body["lifetime"] == {"limit": 7 * 24 * 3600, "source": "default"}
    assert body["extension"] == {"limit": 24 * 3600, "source": "default"}
    bobs = client_for(bob).get("/api/quota/").json()
    assert bobs["envs"] == {"limit": 5, "used": 0, "source": "default"}
    assert client_for(alice).post("/api/quota/", {}).status_code == 405


def test_the_schema_documents_the_quota_endpoint_and_refusal(client, db):
    schema = client.get("/api/schema/?format=json").json()
    assert set(schema["paths"]["/api/quota/"]["get"]["responses"]) == {"200", "401", "403"}
    error = schema["components"]["schemas"]["Error"]["properties"]
    assert {"quota", "limit", "used", "requested"} <= set(error)
    assert "quota_exceeded (403)" in error["code"]["description"]
    assert "403" in schema["paths"]["/api/envs/"]["post"]["responses"]
