"""The portal's notification settings page: email on or off, webhooks added (the secret
shown on that answer only), tested and deleted; and the operators' delivery log."""

from __future__ import annotations

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from notifications import services
from notifications.models import Delivery, NotificationSettings, Webhook
from tests.admin_support import make_operator


@pytest.fixture
def client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


PAGE = reverse("notifications:settings")


def test_the_page_shows_the_address_and_the_webhooks(client, alice):
    services.webhook_create(user=alice, endpoint="https://ci.example.com/hook", name="ci")
    response = client.get(PAGE)
    assert response.status_code == 200
    assert b"alice@example.com" in response.content
    assert b"https://ci.example.com/hook" in response.content
    assert b"whsec_" not in response.content


def test_it_adds_a_webhook_and_shows_its_secret_once(client, alice):
    response = client.post(PAGE, {"endpoint": "https://ci.example.com/hook", "name": "ci"})
    assert response.status_code == 200
    secret = Webhook.objects.get(user=alice).secret
    assert secret.encode() in response.content
    assert "no-cache" in response["Cache-Control"]
    assert secret.encode() not in client.get(PAGE).content


def test_it_shows_a_refusal_beside_the_field(client):
    response = client.post(PAGE, {"endpoint": "ftp://ci.example.com/"})
    assert response.status_code == 200
    assert b"must be an http:// or https:// URL" in response.content
    assert not Webhook.objects.exists()


def test_it_turns_email_off_and_on(client, alice):
    client.post(reverse("notifications:email"), {})
    assert NotificationSettings.of(alice).email_enabled is False
    client.post(reverse("notifications:email"), {"email_enabled": "on"})
    assert NotificationSettings.of(alice).email_enabled is True


def test_the_test_buttons_send_through_each_channel(client, alice, receiver, run_tasks):
    hook, secret = services.webhook_create(user=alice, endpoint=receiver.url)
    with run_tasks():
        assert client.post(reverse("notifications:email_test")).status_code == 302
        assert client.post(reverse("notifications:webhook_test", args=[hook.pk])).status_code == 302
    assert [m.subject for m in mail.outbox] == ["TT Portal: Test notification"]
    (request,) = receiver.received
    assert request.signed_with(secret)
    assert set(Delivery.objects.values_list("channel", "status")) == {("email", "delivered"),
                                                                      ("webhook", "delivered")}
    page = client.get(PAGE).content
    assert page.count(b"delivered</span>") == 2


def test_it_deletes_a_webhook(client, alice, bob):
    hook, _ = services.webhook_create(user=alice, endpoint="https://ci.example.com/hook")
    other = Client()
    other.force_login(bob)
    assert other.post(reverse("notifications:webhook_delete", args=[hook.pk])).status_code == 404
    assert client.post(reverse("notifications:webhook_delete", args=[hook.pk])).status_code == 302
    assert not Webhook.objects.exists()


def test_the_admin_shows_the_delivery_log_read_only(alice, run_tasks):
    client = Client()
    make_operator(client)
    with run_tasks():
        delivery = services.send_test_notification(user=alice, channel="email")
    response = client.get(reverse("admin:notifications_delivery_changelist"))
    assert response.status_code == 200
    assert b"alice@example.com" in response.content
    page = client.get(reverse("admin:notifications_delivery_change", args=[delivery.pk]))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content  # a view page: nothing to edit
    assert client.get(reverse("admin:notifications_delivery_add")).status_code == 403
    assert client.get(reverse("admin:notifications_notification_changelist")).status_code == 200
    hook, secret = services.webhook_create(user=alice, endpoint="https://ci.example.com/")
    page = client.get(reverse("admin:notifications_webhook_change", args=[hook.pk]))
    assert page.status_code == 200
    assert secret.encode() not in page.content
