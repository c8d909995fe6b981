"""Test notifications: at most one per channel (email, webhook) per minute per user
(TT_RATE_TEST_NOTIFICATION), in the API and the portal; past it a 429 with Retry-After
naming the limit, and nothing queued."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from envs.services import env_extend
from notifications import services
from notifications.models import Delivery
from tests.api_support import assert_portal_rate_limited, assert_rate_limited, client_for
from tests.support import T0

pytestmark = pytest.mark.usefixtures("frozen_clock")

TEST_EMAIL = "/api/notifications/settings/test-email/"


@pytest.fixture
def hooks(alice):
    return [services.webhook_create(user=alice, endpoint=f"https://ci{i}.example.com/hook")[0]
            for i in (1, 2)]


def test_one_test_per_channel_per_minute_in_the_api(alice, hooks, time_machine):
    api = client_for(alice)
    assert api.post(TEST_EMAIL).status_code == 202
    assert api.post(f"/api/webhooks/{hooks[0].pk}/test/").status_code == 202  # another channel

    again = api.post(TEST_EMAIL)
    wait = assert_rate_limited(again, limit_name="test_notification", limit=1, period=60)
    assert "at most 1 test notifications on one channel per minute (email)" in again.json()["message"]
    other_hook = api.post(f"/api/webhooks/{hooks[1].pk}/test/")  # webhooks are one channel
    assert_rate_limited(other_hook, limit_name="test_notification", limit=1, period=60)
    assert Delivery.objects.count() == 2

    assert wait == 60
    time_machine.move_to(T0 + timedelta(seconds=wait), tick=False)
    assert api.post(TEST_EMAIL).status_code == 202


def test_each_user_has_their_own(alice, bob):
    assert client_for(alice).post(TEST_EMAIL).status_code == 202
    assert client_for(bob).post(TEST_EMAIL).status_code == 202


def test_the_portal_is_limited_too(client, alice, hooks):
    client.force_login(alice)
    assert client.post(reverse("notifications:email_test")).status_code == 302
    assert client.post(reverse("notifications:webhook_test", args=[hooks[0].pk])).status_code == 302

    refused = client.post(reverse("notifications:email_test"))
    assert_portal_rate_limited(refused, says="at most 1 test notifications on one channel per minute (email)")
    assert f'href="{reverse("notifications:settings")}"' in refused.content.decode()
    refused = client.post(reverse("notifications:webhook_test", args=[hooks[1].pk]))
    assert_portal_rate_limited(refused, says="(webhook)")
    assert Delivery.objects.count() == 2


def test_the_extend_link_counts_as_an_extend_of_its_owner(alice, make_env, time_machine, settings):
    settings.TT_RATE_EXTEND = "1/h"
    env = make_env(alice, lifetime=4 * 3600)
    time_machine.move_to(env.end_at - timedelta(hours=1), tick=False)
    (notification,) = services.warn_expiring_due()
    link = notification.payload["extend_url"].removeprefix(settings.TT_PUBLIC_URL)
    env_extend(env=env, by=alice, extend_by=timedelta(minutes=10))  # the owner's one extend this hour

    response = Client().post(link)
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert b"at most 1 Env extensions per hour" in response.content
