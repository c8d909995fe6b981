"""/api/webhooks/ and /api/notifications/: personal (another user's webhook is a 404,
staff's too), the secret shown once, refusals naming the field, test sends answering 202
with their delivery."""

from __future__ import annotations

import pytest
from django.core import mail

from notifications import services
from notifications.models import Delivery, Webhook
from tests.api_support import client_for


@pytest.fixture
def api(alice):
    return client_for(alice)


def test_it_creates_a_webhook_and_shows_its_secret_once(api, alice, settings):
    settings.TT_WEBHOOK_ALLOW_PRIVATE = True
    response = api.post("/api/webhooks/", {"endpoint": "https://ci.example.com/hook", "name": "ci"},
                        format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert (body["name"], body["endpoint"]) == ("ci", "https://ci.example.com/hook")
    assert Webhook.objects.get(user=alice).secret == body["secret"]
    listed = api.get("/api/webhooks/").json()["results"]
    assert [hook["id"] for hook in listed] == [body["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in api.get(f"/api/webhooks/{body['id']}/").json()


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"endpoint": "ftp://example.com/"}, 400, "endpoint"),
    ({"endpoint": "https://user:pw@example.com/"}, 400, "endpoint"),
    ({"endpoint": 12}, 400, "endpoint"),
    ({}, 400, "endpoint"),
    ({"endpoint": "https://example.com/", "secret": "mine"}, 400, "secret"),
    ({"endpoint": "https://example.com:70000/"}, 422, "endpoint"),
    ({"endpoint": "http://127.0.0.1/"}, 422, "endpoint"),
])
def test_it_refuses_a_bad_webhook_naming_the_field(api, body, status, field):
    response = api.post("/api/webhooks/", body, format="json")
    assert response.status_code == status, response.json()
    assert response.json()["field"] == field
    assert not Webhook.objects.exists()


def test_webhooks_are_personal(api, alice, bob, olga, settings):
    hook, _ = services.webhook_create(user=alice, endpoint="https://ci.example.com/")
    for other in (bob, olga):
        client = client_for(other)
        assert client.get(f"/api/webhooks/{hook.pk}/").status_code == 404
        assert client.post(f"/api/webhooks/{hook.pk}/test/").status_code == 404
        assert client.delete(f"/api/webhooks/{hook.pk}/").status_code == 404
        assert client.get("/api/webhooks/").json()["results"] == []
    assert api.delete(f"/api/webhooks/{hook.pk}/").status_code == 204
    assert not Webhook.objects.exists()


def test_a_test_send_answers_202_with_its_delivery(api, alice, receiver, run_tasks):
    hook, secret = services.webhook_create(user=alice, endpoint=receiver.url)
    with run_tasks():
        response = api.post(f"/api/webhooks/{hook.pk}/test/")
    assert response.status_code == 202
    body = response.json()
    assert response["Location"].endswith(f"/api/notifications/deliveries/{body['id']}/")
    assert (body["event"], body["channel"], body["webhook"], body["target"]) == (
        "test", "webhook", hook.pk, receiver.url)
    delivered = api.get(f"/api/notifications/deliveries/{body['id']}/").json()
    assert (delivered["status"], delivered["attempts"], delivered["response_status"]) == ("delivered", 1, 204)
    (request,) = receiver.received
    assert request.signed_with(secret)


def test_it_tests_the_email_channel(api, alice, run_tasks):
    with run_tasks():
        response = api.post("/api/notifications/settings/test-email/")
    assert response.status_code == 202
    assert response.json()["target"] == "alice@example.com"
    (message,) = mail.outbox
    assert message.subject == "TT Portal: Test notification"
    assert Delivery.objects.get().status == "delivered"


def test_a_test_email_without_an_address_is_recorded_as_skipped(bob, run_tasks):
    with run_tasks():
        response = client_for(bob).post("/api/notifications/settings/test-email/")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["last_error"]) == (
        "skipped", "the user has no email address")
    assert mail.outbox == []


def test_it_turns_email_off_and_on(api, alice):
    assert api.get("/api/notifications/settings/").json() == {
        "email": "alice@example.com", "email_enabled": True}
    response = api.put("/api/notifications/settings/", {"email_enabled": False}, format="json")
    assert response.json() == {"email": "alice@example.com", "email_enabled": False}
    assert api.put("/api/notifications/settings/", {"email_enabled": "no"}, format="json").status_code == 400
    assert api.get("/api/notifications/settings/").json()["email_enabled"] is False


def test_deliveries_are_personal_and_filtered(api, alice, bob, run_tasks):
    with run_tasks():
        services.send_test_notification(user=alice, channel="email")
        services.send_test_notification(user=bob, channel="email")
    mine = api.get("/api/notifications/deliveries/").json()["results"]
    assert [d["target"] for d in mine] == ["alice@example.com"]
    assert api.get("/api/notifications/deliveries/?status=skipped").json()["results"] == []
    assert api.get("/api/notifications/deliveries/?event=test&channel=email").json()["count"] == 1
    assert api.get("/api/notifications/deliveries/?status=bogus").status_code == 400
    theirs = Delivery.objects.get(notification__user=bob)
    assert api.get(f"/api/notifications/deliveries/{theirs.pk}/").status_code == 404


def test_it_needs_a_sign_in():
    from rest_framework.test import APIClient

    client = APIClient()
    for method, path in (("get", "/api/webhooks/"), ("post", "/api/webhooks/"),
                         ("get", "/api/notifications/settings/"),
                         ("post", "/api/notifications/settings/test-email/"),
                         ("get", "/api/notifications/deliveries/")):
        assert getattr(client, method)(path).status_code == 401
