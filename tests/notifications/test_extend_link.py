"""The "extend by 1 h" link of an expiry warning: GET shows a confirmation and changes
nothing; its POST (CSRF-checked) extends once, as the owner, without signing in; a used,
expired, tampered or dead link gets a page that says so (400 or 410)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from notifications import links, services
from notifications.models import Notification
from operations.models import Operation
from tests.support import T0

HOUR = timedelta(hours=1)

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def env(alice, make_env):
    return make_env(alice, lifetime=4 * 3600)


@pytest.fixture
def link(env, time_machine) -> str:
    """The path of the link in the 1 h warning, sent at end - 1 h (the clock stays there)."""
    time_machine.move_to(env.end_at - HOUR)
    (notification,) = services.warn_expiring_due()
    url = notification.payload["extend_url"]
    assert url.startswith("http://127.0.0.1:8000/")
    return url.removeprefix("http://127.0.0.1:8000")


def extends(env) -> list[Operation]:
    return list(Operation.objects.filter(env=env, kind="env_extend"))


def test_a_get_shows_the_env_and_changes_nothing(env, link):
    end = env.end_at
    for _ in range(3):  # a mail client's preview, a link scanner, the person
        response = Client().get(link)
        assert response.status_code == 200
        assert b"Extend demo by 1 hour?" in response.content
        assert b"2030-01-01 17:00 UTC" in response.content  # the end it would have
    env.refresh_from_db()
    assert env.end_at == end
    assert extends(env) == []
    assert Notification.objects.get().extend_used_at is None


def test_its_post_extends_once_as_the_owner_without_signing_in(env, link, alice):
    client = Client(enforce_csrf_checks=True)
    page = client.get(link)
    token = page.cookies["csrftoken"].value
    response = client.post(link, {"csrfmiddlewaretoken": token})
    assert response.status_code == 200
    assert b"demo extended" in response.content
    env.refresh_from_db()
    assert env.end_at == T0 + 5 * HOUR
    (op,) = extends(env)
    assert (op.requested_by, op.status) == (alice, "succeeded")
    assert response["Referrer-Policy"] == "no-referrer"

    again = client.post(link, {"csrfmiddlewaretoken": token})
    assert again.status_code == 410
    assert b"This link was used already" in again.content
    assert client.get(link).status_code == 410
    env.refresh_from_db()
    assert env.end_at == T0 + 5 * HOUR
    assert len(extends(env)) == 1


def test_its_post_needs_the_csrf_token(env, link):
    response = Client(enforce_csrf_checks=True).post(link)
    assert response.status_code == 403
    assert extends(env) == []


def test_whoever_is_signed_in_it_acts_as_the_owner(env, link, alice, bob):
    client = Client()
    client.force_login(bob)
    assert client.post(link).status_code == 200
    (op,) = extends(env)
    assert op.requested_by == alice


def test_it_expires_at_the_end_it_was_sent_for(env, link, time_machine):
    time_machine.move_to(env.end_at)
    response = Client().get(link)
    assert response.status_code == 410
    assert b"This link has expired" in response.content
    assert Client().post(link).status_code == 410
    assert extends(env) == []


def test_it_refuses_a_tampered_token(env, link):
    token = link.rstrip("/").rsplit("/", 1)[1]
    value, _, signature = token.rpartition(":")
    forged = links.make(Notification.objects.get().pk + 1, env.end_at + 100 * HOUR).rpartition(":")[0]
    for bad in (value + ":" + signature[:-2] + "xx", forged + ":" + signature, token[:-5], "nothing"):
        url = reverse("notifications:extend", args=[bad])
        for response in (Client().get(url), Client().post(url)):
            assert response.status_code == 400
            assert b"This link is not valid" in response.content
    assert extends(env) == []


def test_a_refused_extension_does_not_spend_the_link(env, link, settings):
    settings.TT_MAX_ENV_LIFETIME = 4 * 3600 + 600  # 1 h more would pass the longest lifetime
    response = Client().post(link)
    assert response.status_code == 409
    assert b"must not end past the Env&#x27;s start" in response.content
    settings.TT_MAX_ENV_LIFETIME = 8 * 3600
    assert Client().post(link).status_code == 200


def test_it_refuses_once_the_env_is_gone(env, link, alice, run_tasks):
    from envs.services import env_destroy

    with run_tasks():
        env_destroy(env=env, by=alice)
    response = Client().get(link)
    assert response.status_code == 410
    assert b"This Env is gone" in response.content


def test_each_warning_has_its_own_link(env, link, time_machine):
    assert Client().post(link).status_code == 200  # the end is now T0 + 5 h
    time_machine.move_to(T0 + 5 * HOUR - timedelta(minutes=10))
    (notification,) = services.warn_expiring_due()
    second = notification.payload["extend_url"].removeprefix("http://127.0.0.1:8000")
    assert second != link
    assert Client().post(second).status_code == 200
    env.refresh_from_db()
    assert env.end_at == T0 + 6 * HOUR
