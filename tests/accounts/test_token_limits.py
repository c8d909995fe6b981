"""API tokens: how often one user may make them (TT_RATE_TOKEN_CREATE) and how many live
ones one may hold (TT_MAX_TOKENS_PER_USER, 50 by default): at the limit accepted, one past
it a 429 with Retry-After naming the limit, in the API and the portal."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import token_create, token_revoke
from tests.api_support import assert_portal_rate_limited, assert_rate_limited
from ttportal.errors import RateLimited

pytestmark = pytest.mark.usefixtures("frozen_clock")


def create(username: str, **body):
    credentials = base64.b64encode(f"{username}:pw-{username}".encode()).decode()
    return APIClient().post("/api/tokens/", {"name": "ci", **body}, format="json",
                            HTTP_AUTHORIZATION=f"Basic {credentials}")


def test_token_creation_is_rate_limited_in_the_api(alice, settings):
    settings.TT_RATE_TOKEN_CREATE = "3/h"
    for _ in range(3):
        assert create("alice").status_code == 201
    refused = create("alice")
    assert_rate_limited(refused, limit_name="token_create", limit=3, period=3600)
    assert "at most 3 new API tokens per hour" in refused.json()["message"]
    assert ApiToken.objects.count() == 3


def test_token_creation_is_rate_limited_in_the_portal(client, alice, settings):
    settings.TT_RATE_TOKEN_CREATE = "2/h"
    client.force_login(alice)
    url = reverse("accounts:tokens")
    for name in ("one", "two"):
        assert client.post(url, {"name": name, "expires_in_days": "30"}).status_code == 200
    refused = client.post(url, {"name": "three", "expires_in_days": "30"})
    assert_portal_rate_limited(refused, says="at most 2 new API tokens per hour")
    assert ApiToken.objects.count() == 2


def test_a_user_holds_at_most_50_live_tokens(alice, settings):
    settings.TT_RATE_TOKEN_CREATE = None  # the count alone
    assert settings.TT_MAX_TOKENS_PER_USER == 50
    first, _ = token_create(user=alice, name="first", expires_in=600)
    for i in range(48):
        token_create(user=alice, name=f"t{i}")
    assert create("alice").status_code == 201  # the 50th

    refused = create("alice")
    wait = assert_rate_limited(refused, limit_name="live_tokens", limit=50)
    assert wait == 600  # when the first expires
    assert "revoke one" in refused.json()["message"]
    assert ApiToken.objects.filter(user=alice).count() == 50

    token_revoke(token=first, by=alice)
    assert create("alice").status_code == 201


def test_expired_tokens_do_not_count(alice, settings):
    settings.TT_RATE_TOKEN_CREATE = None
    settings.TT_MAX_TOKENS_PER_USER = 2
    old, _ = token_create(user=alice, name="old")
    token_create(user=alice, name="live")
    with pytest.raises(RateLimited):
        token_create(user=alice, name="more")
    ApiToken.objects.filter(pk=old.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    token_create(user=alice, name="more")
