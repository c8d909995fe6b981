"""API authentication and the API's shared conventions: personal hashed tokens with
expiry (shown once, listed without secrets, last use tracked, revocable), the
browser session with CSRF, one error mapping, and a valid OpenAPI schema."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
import yaml
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from tests.api_support import client_for, expired_client, token_client
from tests.support import T0
from ttportal import errors
from ttportal.api import exception_handler

pytestmark = pytest.mark.usefixtures("frozen_clock")


def basic(username: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:pw-{username}".encode()).decode()


def test_it_creates_a_token_with_a_password_and_shows_the_secret_once(alice, settings):
    response = APIClient().post("/api/tokens/", {"name": "ci", "expires_in": 3600},
                                HTTP_AUTHORIZATION=basic("alice"))
    assert response.status_code == 201
    body = response.json()
    secret = body["token"]
    assert secret.startswith("ttp_")
    assert (body["name"], body["expiry"]) == ("ci", "2030-01-01T13:00:00Z")

    stored = ApiToken.objects.get(public_id=body["id"])
    assert stored.user == alice
    assert secret not in (stored.digest, stored.token_key) and len(stored.digest) == 128  # only a hash

    api = token_client(secret)
    assert api.get("/api/envs/").status_code == 200
    listed = api.get("/api/tokens/").json()["results"]
    assert listed == [{"id": body["id"], "url": body["url"], "name": "ci", "created": "2030-01-01T12:00:00Z",
                       "expiry": "2030-01-01T13:00:00Z", "last_used_at": "2030-01-01T12:00:00Z",
                       "current": True}]
    assert "token" not in api.get(f"/api/tokens/{body['id']}/").json()


def test_it_gives_a_token_the_default_lifetime(alice, settings):
    response = APIClient().post("/api/tokens/", {"name": "ci"}, HTTP_AUTHORIZATION=basic("alice"))
    assert response.json()["expiry"] == (T0 + timedelta(seconds=settings.TT_API_TOKEN_DEFAULT_TTL)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(("body", "field"), [
    ({"name": ""}, "name"),
    ({"name": "ci", "expires_in": 10}, "expires_in"),
    ({"name": "ci", "expires_in": 10**10}, "expires_in"),
    ({"name": "ci", "expires_in": "soon"}, "expires_in"),
])
def test_it_refuses_a_bad_token_request(alice, body, field):
    response = APIClient().post("/api/tokens/", body, HTTP_AUTHORIZATION=basic("alice"))
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("invalid", field)
    assert not ApiToken.objects.exists()


def test_it_does_not_let_a_token_mint_tokens(alice):
    api = client_for(alice)
    response = api.post("/api/tokens/", {"name": "successor", "expires_in": 10**6})
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")
    assert ApiToken.objects.count() == 1


def test_it_refuses_a_wrong_password(alice):
    response = APIClient().post("/api/tokens/", {"name": "ci"},
                                HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"alice:guess").decode())
    assert (response.status_code, response.json()["code"]) == (401, "authentication_failed")


def test_it_keeps_several_tokens_per_user_and_revokes_one(alice):
    api = client_for(alice, name="laptop")
    token, secret = ApiToken.objects.create(user=alice, expiry=timedelta(hours=1), name="ci")
    ci = token_client(secret)
    assert {t["name"] for t in api.get("/api/tokens/").json()["results"]} == {"laptop", "ci"}

    assert api.delete(f"/api/tokens/{token.public_id}/").status_code == 204

    response = ci.get("/api/envs/")
    assert (response.status_code, response.json()["code"]) == (401, "authentication_failed")
    assert {t["name"] for t in api.get("/api/tokens/").json()["results"]} == {"laptop"}


def test_it_can_revoke_the_token_in_use(alice):
    api = client_for(alice)
    (token,) = ApiToken.objects.all()
    assert api.delete(f"/api/tokens/{token.public_id}/").status_code == 204
    assert api.get("/api/tokens/").status_code == 401


def test_it_hides_other_peoples_tokens_even_from_staff(alice, olga):
    token, _ = ApiToken.objects.create(user=alice, expiry=timedelta(hours=1), name="alice-ci")
    staff = client_for(olga)
    assert [t["name"] for t in staff.get("/api/tokens/").json()["results"]] == ["test"]
    assert staff.delete(f"/api/tokens/{token.public_id}/").status_code == 404
    assert staff.get("/api/tokens/not-a-uuid/").status_code == 404
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_it_refuses_an_expired_token_and_forgets_it(alice):
    api = expired_client(alice)
    response = api.get("/api/envs/")
    assert (response.status_code, response.json()["code"]) == (401, "authentication_failed")
    assert response["WWW-Authenticate"] == "Token"
    assert not ApiToken.objects.filter(name="expired").exists()


def test_it_refuses_a_malformed_token_header(alice):
    response = APIClient().get("/api/envs/", HTTP_AUTHORIZATION="Token")
    assert (response.status_code, response.json()["code"]) == (401, "authentication_failed")


def test_it_records_the_last_use_at_most_once_a_minute(alice, time_machine):
    token, secret = ApiToken.objects.create(user=alice, expiry=timedelta(days=1), name="ci")
    api = token_client(secret)
    assert token.last_used_at is None
    api.get("/api/envs/")
    token.refresh_from_db()
    assert token.last_used_at == T0
    time_machine.move_to(T0 + timedelta(seconds=30), tick=False)
    api.get("/api/envs/")
    token.refresh_from_db()
    assert token.last_used_at == T0
    time_machine.move_to(T0 + timedelta(minutes=5), tick=False)
    api.get("/api/envs/")
    token.refresh_from_db()
    assert token.last_used_at == T0 + timedelta(minutes=5)


def test_it_lets_the_signed_in_browser_use_the_api_with_csrf(alice, make_env):
    env = make_env(alice)
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(alice)
    assert browser.get(f"/api/envs/{env.pk}/").status_code == 200

    refused = browser.post(f"/api/envs/{env.pk}/stop/")
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    assert "CSRF" in refused.json()["message"]

    browser.get("/admin/login/")  # any page that sets the CSRF cookie
    csrf = browser.cookies["csrftoken"].value
    assert browser.post(f"/api/envs/{env.pk}/stop/", HTTP_X_CSRFTOKEN=csrf).status_code == 202
    created = browser.post("/api/tokens/", {"name": "from-the-browser"}, HTTP_X_CSRFTOKEN=csrf)
    assert created.status_code == 201 and created.json()["token"]


def test_it_answers_nobody_with_401_and_how_to_authenticate(db):
    response = APIClient().get("/api/envs/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {"code": "not_authenticated",
                               "message": "Authentication credentials were not provided."}


@pytest.mark.parametrize(("error", "status", "code"), [
    (errors.InvalidInput("name", "must be a DNS label"), 400, "invalid"),
    (errors.Forbidden("no"), 403, "forbidden"),
    (errors.NotFound("gone"), 404, "not_found"),
    (errors.IllegalState("busy"), 409, "illegal_state"),
    (errors.Exhausted("no port"), 409, "resources_exhausted"),
    (errors.Unsupported("no snapshots here"), 422, "unsupported_feature"),
    (errors.CooldownActive(retry_after=7), 429, "cooldown"),
    (errors.EngineError("boom", code="start_vm"), 502, "start_vm"),
    (errors.TTError("bug"), 500, "internal"),
])
def test_it_maps_each_service_error_to_one_status_and_its_code(error, status, code):
    response = exception_handler(error, {})
    assert response.status_code == status
    assert response.data["code"] == code
    assert response.data["message"] == error.message
    if isinstance(error, errors.InvalidInput):
        assert response.data["field"] == "name"
        assert response.data["errors"] == {"name": ["must be a DNS label"]}
    if isinstance(error, errors.CooldownActive):
        assert (response["Retry-After"], response.data["retry_after"]) == ("7", 7)


def test_it_serves_a_valid_openapi_schema(db, tmp_path):
    # drf-spectacular's own validation, failing on any warning (an unannotated view, say).
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    stop = schema["paths"]["/api/envs/{id}/stop/"]["post"]
    assert stop["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Operation"}
    assert {"400", "401", "404", "409", "429"} <= set(stop["responses"])
    assert "Retry-After" in stop["responses"]["429"]["headers"]
    assert "Idempotency-Key" in {p["name"] for p in stop["parameters"]}
    create = schema["paths"]["/api/envs/"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EnvCreateRequest"}


def test_it_serves_swagger_ui_from_local_static_files(db):
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()


def test_it_never_stores_or_lists_a_secret(alice):
    _, secret = ApiToken.objects.create(user=alice, expiry=timedelta(hours=1), name="ci")
    listing = client_for(alice).get("/api/tokens/").content.decode()
    assert secret not in listing
    assert not ApiToken.objects.filter(digest=secret).exists()
    assert ApiToken.objects.filter(expiry__gt=timezone.now()).count() == 2
