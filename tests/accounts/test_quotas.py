"""Per-user quotas (accounts/quotas.py): the defaults and their variables, overrides per
user and per group and the rule that resolves them, what counts as in use (vms/usage.py),
and the override pages of the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import GroupQuota, UserQuota
from accounts.quotas import NAMES, Usage, defaults, limits_for
from tests.admin_support import make_operator
from tests.support import take_snapshot
from tests.ttportal.test_settings import start_django
from vms.new_vms import NewVm
from vms.services import vm_destroy
from vms.usage import usage_of


def test_it_starts_from_the_settings_defaults(alice, settings):
    settings.TT_QUOTA_ENVS = 3
    limits = limits_for(alice)
    assert limits.values == {"envs": 3, "vms": 20, "vcpus": 16, "mem_mb": 16384, "disk_mb": 102400,
                             "snapshots": 50, "ports": 64, "lifetime": settings.TT_MAX_ENV_LIFETIME,
                             "extension": 86400}
    assert set(limits.sources.values()) == {"default"}
    assert limits.values == defaults()


def test_it_resolves_user_then_the_most_generous_group_then_the_default(alice, bob):
    devs, ops, interns, other = (Group.objects.create(name=n) for n in ("devs", "ops", "interns", "other"))
    alice.groups.add(devs, ops, interns)
    GroupQuota.objects.create(group=devs, envs=8, vcpus=32)
    GroupQuota.objects.create(group=ops, envs=12, mem_mb=1024)  # below the default: a group may restrict
    GroupQuota.objects.create(group=interns, envs=1, mem_mb=512)
    GroupQuota.objects.create(group=other, vms=99)  # alice is not in it
    UserQuota.objects.create(user=alice, vcpus=4, snapshots=0)  # her own wins, even when lower

    limits = limits_for(alice)

    assert (limits["envs"], limits.sources["envs"]) == (12, "group ops")  # the most generous group
    assert (limits["mem_mb"], limits.sources["mem_mb"]) == (1024, "group ops")
    assert (limits["vcpus"], limits.sources["vcpus"]) == (4, "user")
    assert (limits["snapshots"], limits.sources["snapshots"]) == (0, "user")  # 0 is a limit, not "inherit"
    assert (limits["vms"], limits.sources["vms"]) == (20, "default")
    assert (limits["lifetime"], limits.sources["lifetime"]) == (7 * 24 * 3600, "default")
    assert limits_for(bob).values == defaults()  # no group, no override


def test_it_names_the_first_group_by_name_among_equals(alice):
    for name in ("zeta", "alpha"):
        group = Group.objects.create(name=name)
        alice.groups.add(group)
        GroupQuota.objects.create(group=group, envs=7)
    assert limits_for(alice).sources["envs"] == "group alpha"


def test_it_resolves_the_limits_in_one_query(alice):
    group = Group.objects.create(name="devs")
    alice.groups.add(group)
    GroupQuota.objects.create(group=group, envs=8)
    UserQuota.objects.create(user=alice, vms=3)
    with CaptureQueriesContext(connection) as ctx:
        limits = limits_for(alice)
    assert len(ctx.captured_queries) == 1
    assert (limits["envs"], limits["vms"]) == (8, 3)


def test_it_counts_what_is_live_in_one_query(alice, bob, make_env, template, run_tasks):
    env = make_env(alice, vms=[NewVm(name="a", template=template.name, cpu_num=2, mem_mb=512, disk_mb=30,
                                     ports=[22, 80]),
                               NewVm(name="b", template=template.name, ports=["53/udp"])])
    make_env(alice, name="other")
    make_env(bob, name="bobs", vms=3)
    take_snapshot(env.vms.get(name="a"), run_tasks, "s1")
    take_snapshot(env.vms.get(name="b"), run_tasks, "s2")
    with CaptureQueriesContext(connection) as ctx:
        used = usage_of(alice)
    assert len(ctx.captured_queries) == 1
    assert used == Usage(envs=2, vms=3, vcpus=4, mem_mb=1024, disk_mb=70, snapshots=2, ports=3)
    with run_tasks():
        vm_destroy(vm=env.vms.get(name="b"), by=alice)  # its snapshot goes with it
    assert usage_of(alice) == Usage(envs=2, vms=2, vcpus=3, mem_mb=768, disk_mb=50, snapshots=1, ports=2)
    assert usage_of(bob) != Usage() and usage_of(get_user_model().objects.create_user("nobody")) == Usage()


def test_it_refuses_an_override_past_the_longest_lifetime(alice, settings):
    settings.TT_MAX_ENV_LIFETIME = 3600
    quota = UserQuota(user=alice, lifetime=3601, extension=7200)
    with pytest.raises(ValidationError) as caught:
        quota.full_clean()
    assert set(caught.value.message_dict) == {"lifetime", "extension"}
    UserQuota(user=alice, lifetime=3600, extension=None).full_clean()


# --- the admin ------------------------------------------------------------------------------


def test_operators_override_a_users_quota_in_the_admin(client, alice, make_env):
    make_operator(client)
    make_env(alice, vms=2)
    add = reverse("admin:accounts_userquota_add")
    assert client.get(add).status_code == 200
    data = {"user": str(alice.pk), "envs": "9", "vms": "", "vcpus": "", "mem_mb": "", "disk_mb": "",
            "snapshots": "", "ports": "200", "lifetime": "", "extension": "3600", "note": "a big demo"}
    response = client.post(add, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    quota = UserQuota.objects.get(user=alice)
    assert (quota.envs, quota.vms, quota.ports, quota.extension) == (9, None, 200, 3600)  # empty: inherit
    page = client.get(reverse("admin:accounts_userquota_change", args=[quota.pk])).content.decode()
    assert "live Envs: limit 9 · in use 1 · from user" in page
    assert "memory: limit 16384 MiB · in use 512 MiB · from default" in page
    assert "forwarded ports: limit 200 · in use 0 · from user" in page
    assert "longest single extension: limit 3600 s · in use per Env · from user" in page
    assert client.get(reverse("admin:accounts_userquota_changelist")).status_code == 200


def test_operators_override_a_groups_quota_in_the_admin(client, alice):
    make_operator(client)
    group = Group.objects.create(name="team")
    alice.groups.add(group)
    add = reverse("admin:accounts_groupquota_add")
    data = {"group": str(group.pk), **dict.fromkeys(NAMES, ""), "vcpus": "48", "note": ""}
    assert client.post(add, data).status_code == 302
    assert limits_for(alice).sources["vcpus"] == "group team"
    assert client.get(reverse("admin:accounts_groupquota_changelist")).status_code == 200


def test_the_admin_refuses_a_lifetime_past_the_maximum(client, alice, settings):
    make_operator(client)
    too_long = str(settings.TT_MAX_ENV_LIFETIME + 1)
    data = {"user": str(alice.pk), **dict.fromkeys(NAMES, ""), "lifetime": too_long}
    response = client.post(reverse("admin:accounts_userquota_add"), data)
    assert response.status_code == 200
    assert "must be at most TT_MAX_ENV_LIFETIME" in response.context["adminform"].form.errors["lifetime"][0]
    assert not UserQuota.objects.exists()


# --- the variables -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TT_QUOTA_ENVS", "many", "TT_QUOTA_ENVS must be an integer"),
        ("TT_QUOTA_MEM_MB", "-1", "TT_QUOTA_MEM_MB must be at least 0"),
        ("TT_QUOTA_MAX_EXTENSION", "999999999", "TT_QUOTA_MAX_EXTENSION (999999999) must not exceed"),
    ],
)
def test_it_refuses_a_bad_quota_variable_by_name(name, value, message):
    result = start_django(**{name: value})
    assert result.returncode != 0
    assert message in result.stderr
