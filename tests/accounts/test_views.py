"""The portal's API tokens page: the owner's tokens only, the secret shown once,
revoke by POST with CSRF, and the same rules as the API (accounts.services)."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts import services
from accounts.models import ApiToken

TOKENS = reverse("accounts:tokens")


def revoke_url(token: ApiToken) -> str:
    return reverse("accounts:revoke", args=[token.public_id])


def api_works(secret: str) -> bool:
    """Does the secret still authenticate against the API?"""
    return Client().get("/api/tokens/", HTTP_AUTHORIZATION=f"Token {secret}").status_code == 200


@pytest.fixture
def alices_token(alice):
    return services.token_create(user=alice, name="ci of alice")


def test_it_lists_my_tokens(client, alice, bob, alices_token):
    services.token_create(user=bob, name="bobs-secret-pipeline")
    client.force_login(alice)
    response = client.get(TOKENS)
    assert response.status_code == 200
    body = response.content.decode()
    assert "ci of alice" in body
    assert "bobs-secret-pipeline" not in body
    assert revoke_url(alices_token[0]) in body
    assert alices_token[1] not in body  # the secret is never listed
    assert "never" in body  # last used


def test_it_shows_the_nav_link(client, alice):
    client.force_login(alice)
    body = client.get(reverse("envs:list")).content.decode()
    assert f'href="{TOKENS}"' in body
    assert "API tokens" in body


def test_it_sends_anonymous_users_to_sign_in(client, alice, alices_token):
    for response in (client.get(TOKENS), client.post(TOKENS, {"name": "x", "expires_in_days": "1"}),
                     client.post(revoke_url(alices_token[0]))):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    assert ApiToken.objects.count() == 1


def test_it_offers_the_api_default_and_limit(client, alice, settings):
    settings.TT_API_TOKEN_DEFAULT_TTL = 7 * 86400
    settings.TT_API_TOKEN_MAX_TTL = 90 * 86400
    client.force_login(alice)
    form = client.get(TOKENS).context["form"]
    assert form["expires_in_days"].initial == 7
    assert 'max="90"' in str(form["expires_in_days"])


def test_it_creates_a_token_and_shows_its_secret_once(client, alice, caplog):
    client.force_login(alice)
    before = timezone.now()
    with caplog.at_level(logging.DEBUG):
        response = client.post(TOKENS, {"name": "deploy bot", "expires_in_days": "3"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get(user=alice)
    assert token.name == "deploy bot"
    assert before + timedelta(days=3) <= token.expiry <= timezone.now() + timedelta(days=3)
    secret = response.context["secret"]
    assert secret.startswith("ttp_")
    assert secret in response.content.decode()
    assert "not be shown again" in response.content.decode()
    assert secret not in caplog.text
    assert api_works(secret)
    # Never again: not on the list, not as a flash message on the next page.
    for page in (TOKENS, reverse("envs:list")):
        assert secret not in client.get(page).content.decode()
    assert secret[:15] not in str(client.session.items())


def test_it_uses_the_api_default_expiry_when_the_field_is_left_at_its_default(client, alice, settings):
    settings.TT_API_TOKEN_DEFAULT_TTL = 2 * 86400
    client.force_login(alice)
    days = client.get(TOKENS).context["form"]["expires_in_days"].initial
    client.post(TOKENS, {"name": "defaulted", "expires_in_days": str(days)})
    expiry = ApiToken.objects.get(user=alice).expiry
    assert abs(expiry - (timezone.now() + timedelta(days=2))) < timedelta(minutes=1)


@pytest.mark.parametrize(("data", "field"), [
    ({"name": "", "expires_in_days": "3"}, "name"),
    ({"name": "   ", "expires_in_days": "3"}, "name"),
    ({"name": "x" * 101, "expires_in_days": "3"}, "name"),
    ({"name": "ok", "expires_in_days": "0"}, "expires_in_days"),
    ({"name": "ok", "expires_in_days": "366"}, "expires_in_days"),
    ({"name": "ok", "expires_in_days": "soon"}, "expires_in_days"),
])
def test_it_refuses_a_bad_token(client, alice, data, field):
    client.force_login(alice)
    response = client.post(TOKENS, data)
    assert response.status_code == 200
    assert response.context["form"].errors[field]
    assert "secret" not in response.context
    assert not ApiToken.objects.exists()


def test_it_reports_the_services_refusal_on_the_field(client, alice, settings):
    # The service, not the form, has the last word: an expiry under its 60 s minimum.
    settings.TT_API_TOKEN_MAX_TTL = 30
    client.force_login(alice)
    response = client.post(TOKENS, {"name": "ok", "expires_in_days": "1"})
    assert response.status_code == 200
    assert response.context["form"].errors["expires_in_days"]
    assert not ApiToken.objects.exists()


def test_it_revokes_my_token(client, alice, alices_token):
    token, secret = alices_token
    assert api_works(secret)
    client.force_login(alice)
    response = client.post(revoke_url(token), follow=True)
    assert response.redirect_chain == [(TOKENS, 302)]
    assert "Revoked the token ci of alice" in response.content.decode()
    assert not ApiToken.objects.filter(pk=token.pk).exists()
    assert not api_works(secret)


def test_it_returns_404_for_someone_elses_token(client, alice, bob, alices_token):
    client.force_login(bob)
    response = client.post(revoke_url(alices_token[0]))
    assert response.status_code == 404
    assert ApiToken.objects.filter(pk=alices_token[0].pk).exists()


def test_it_returns_404_for_an_unknown_token(client, alice):
    client.force_login(alice)
    assert client.post(reverse("accounts:revoke", args=[uuid.uuid4()])).status_code == 404


def test_it_refuses_get_on_revoke(client, alice, alices_token):
    client.force_login(alice)
    response = client.get(revoke_url(alices_token[0]))
    assert response.status_code == 405
    assert ApiToken.objects.filter(pk=alices_token[0].pk).exists()


def test_it_enforces_csrf(alice, alices_token):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(revoke_url(alices_token[0])).status_code == 403
    assert client.post(TOKENS, {"name": "sneaky", "expires_in_days": "1"}).status_code == 403
    assert ApiToken.objects.filter(user=alice).count() == 1
    # With the page's token both work.
    client.get(TOKENS)
    csrf = client.cookies["csrftoken"].value
    assert client.post(TOKENS, {"name": "real", "expires_in_days": "1", "csrfmiddlewaretoken": csrf}
                       ).status_code == 200
    assert client.post(revoke_url(alices_token[0]), {"csrfmiddlewaretoken": csrf}).status_code == 302
    assert list(ApiToken.objects.filter(user=alice).values_list("name", flat=True)) == ["real"]
