"""Test notifications: at most one per channel (email, webhook) per minute per user
(TT_RATE_TEST_NOTIFICATION), in the API and the portal; past it a 429 with Retry-After
naming the limit, and nothing queued."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

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
