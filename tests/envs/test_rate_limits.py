"""How often one user may extend and peer, and how many operations one user may have
queued at once (ttportal/ratelimit.py, operations/recording.check_queue): at the limit
accepted, one past it a 429 with Retry-After naming the limit, in the API and the portal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from envs.kinds import EnvKind
from envs.models import Peering
from envs.services import env_extend
from operations.models import Operation
from tests.api_support import assert_portal_rate_limited, assert_rate_limited, client_for
from tests.support import T0
from ttportal.errors import RateLimited

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.TT_RATE_EXTEND = "3/h"
    settings.TT_RATE_PEER = "2/m"
    settings.TT_MAX_QUEUED_OPERATIONS_PER_USER = 3


@pytest.fixture
def env(alice, make_env):
    return make_env(alice, name="demo")


def extend_api(api, env):
    return api.post(f"/api/envs/{env.pk}/extend/", {"lifetime": 7200}, format="json")


def test_extends_are_limited_per_user_in_the_api(alice, env, time_machine):
    api = client_for(alice)
    for _ in range(3):
        assert extend_api(api, env).status_code == 202
    end = type(env).objects.get(pk=env.pk).end_at

    refused = extend_api(api, env)
    wait = assert_rate_limited(refused, limit_name="extend", limit=3, period=3600)
    assert wait == 3600  # all three at the same instant: the first leaves the window in an hour
    assert "at most 3 Env extensions per hour" in refused.json()["message"]
    assert type(env).objects.get(pk=env.pk).end_at == end  # nothing changed
    assert Operation.objects.filter(kind="env_extend").count() == 3

    time_machine.move_to(T0 + timedelta(seconds=wait), tick=False)
    assert extend_api(api, env).status_code == 202


def test_a_refused_extend_is_not_counted(alice, env):
    api = client_for(alice)
    for _ in range(3):
        bad = api.post(f"/api/envs/{env.pk}/extend/", {"lifetime": 10**9}, format="json")
        assert bad.status_code == 400
    for _ in range(3):
        assert extend_api(api, env).status_code == 202


def test_extends_are_limited_in_the_portal_too(client, alice, env):
    client.force_login(alice)
    url = reverse("envs:extend", args=[env.pk])
    for _ in range(3):
        assert client.post(url, {"hours": "1"}).status_code == 302
    refused = client.post(url, {"hours": "1"})
    assert_portal_rate_limited(refused, says="Not now: rate limited: at most 3 Env extensions per hour")
    assert f'href="{reverse("envs:detail", args=[env.pk])}"' in refused.content.decode()  # back


def test_the_limit_is_the_users_whichever_interface_and_env(alice, env, make_env):
    other = make_env(alice, name="other")
    env_extend(env=env, by=alice, lifetime=7200)  # a service call, as the notification link makes
    assert extend_api(client_for(alice), other).status_code == 202
    env_extend(env=other, by=alice, lifetime=7200)
    with pytest.raises(RateLimited) as refused:
        env_extend(env=env, by=alice, lifetime=7200)
    assert refused.value.limit_name == "extend"


def test_staff_and_tasks_are_not_limited(alice, olga, env):
    for _ in range(5):
        env_extend(env=env, by=olga, lifetime=7200)
    assert Operation.objects.filter(kind="env_extend").count() == 5


@pytest.fixture
def bobs(bob, make_env):
    return make_env(bob, name="server")


def test_peer_and_unpeer_are_limited_together_in_the_api(alice, env, bobs):
    api = client_for(alice)
    assert api.post(f"/api/envs/{env.pk}/peers/", {"env": "bob/server"}, format="json").status_code == 202
    assert api.delete(f"/api/envs/{env.pk}/peers/{bobs.pk}/").status_code == 202  # withdrawn

    refused = api.post(f"/api/envs/{env.pk}/peers/", {"env": "bob/server"}, format="json")
    assert_rate_limited(refused, limit_name="peer", limit=2, period=60)
    assert not Peering.objects.current().exists()


def test_peering_is_limited_in_the_portal_too(client, alice, env, bobs):
    client.force_login(alice)
    peer = reverse("envs:peer", args=[env.pk])
    assert client.post(peer, {"env": "bob/server"}).status_code == 302
    assert client.post(reverse("envs:unpeer", args=[env.pk, bobs.pk])).status_code == 302
    refused = client.post(peer, {"env": "bob/server"})
    assert_portal_rate_limited(refused, says="at most 2 peering requests (peer and unpeer) per minute")
    assert not Peering.objects.current().exists()


def queued_for(user, env, n: int) -> None:
    """`n` operations of `user`'s waiting for a worker."""
    for _ in range(n):
        Operation.objects.create(kind=EnvKind.ENV_START, env=env, requested_by=user)


def test_queued_operations_are_capped_per_user_in_the_api(alice, bob, env, make_env):
    second, third = make_env(alice, name="second"), make_env(alice, name="third")
    api = client_for(alice)
    queued_for(alice, env, 1)
    Operation.objects.filter(requested_by=alice, status="queued").update(status="running")
    queued_for(alice, env, 1)
    queued_for(bob, make_env(bob, name="bobs"), 5)  # another user's do not count
    assert api.post(f"/api/envs/{env.pk}/stop/").status_code == 202  # 3 queued or running: the cap

    refused = api.post(f"/api/envs/{second.pk}/stop/")
    assert_rate_limited(refused, limit_name="queued_operations", limit=3)
    assert "3 operations queued or running" in refused.json()["message"]
    assert Operation.objects.filter(requested_by=alice, status__in=Operation.LIVE).count() == 3
    assert not second.vms.exclude(status="running").exists()  # nothing was claimed

    # Destroying gives back what one holds: never held up.
    assert api.post(f"/api/envs/{second.pk}/destroy/").status_code == 202
    # Finished operations do not count.
    Operation.objects.filter(requested_by=alice).update(status="succeeded")
    assert api.post(f"/api/envs/{third.pk}/stop/").status_code == 202


def test_queued_operations_are_capped_in_the_portal_too(client, alice, env):
    client.force_login(alice)
    queued_for(alice, env, 3)
    refused = client.post(reverse("envs:stop", args=[env.pk]))
    assert_portal_rate_limited(refused, says="you have 3 operations queued or running")
    assert not Operation.objects.filter(kind="env_stop").exists()
