"""Failed logins, limited per account and per client address (accounts/lockout.py,
django-axes), on each of the three entry points: the portal's sign-in, the admin's, and
POST /api/tokens/ with Basic auth. After the limit even the right password is refused
until the time the answer gives, or until an operator deletes the attempts in the admin."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import ApiToken
from tests.admin_support import make_operator
from tests.conftest import make_user
from tests.support import T0

pytestmark = pytest.mark.usefixtures("frozen_clock")

CLIENT = "198.18.0.5"  # a client dialling the web server directly (not a trusted proxy)
OTHER_CLIENT = "198.18.0.6"


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.TT_LOGIN_FAILURE_LIMIT = settings.AXES_FAILURE_LIMIT = 5
    settings.TT_LOGIN_ADDRESS_FAILURE_LIMIT = 8
    settings.TT_LOGIN_LOCKOUT = 900
    settings.AXES_COOLOFF_TIME = timedelta(seconds=900)


@dataclass(frozen=True)
class EntryPoint:
    name: str

    def attempt(self, username: str, password: str, address: str = CLIENT, **extra):
        """One login try; returns (the response, whether it got in)."""
        if self.name == "api":
            api = APIClient(REMOTE_ADDR=address)
            credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
            response = api.post("/api/tokens/", {"name": "ci"}, HTTP_AUTHORIZATION=f"Basic {credentials}",
                                **extra)
            return response, response.status_code == 201
        client = Client(REMOTE_ADDR=address)
        url = reverse("login") if self.name == "portal" else reverse("admin:login")
        response = client.post(url, {"username": username, "password": password}, **extra)
        return response, "_auth_user_id" in client.session

    def refused(self, response) -> bool:
        """Refused as a wrong password is (not the lockout)."""
        if self.name == "api":
            return response.status_code == 401
        return response.status_code == 200  # the form again, with its error


ENTRY_POINTS = [EntryPoint("portal"), EntryPoint("admin"), EntryPoint("api")]


@pytest.fixture
def carol(db):
    """Allowed everywhere: the admin's sign-in takes staff only."""
    return make_user("carol", is_staff=True)


def fail(entry: EntryPoint, username: str, times: int, address: str = CLIENT):
    responses = [entry.attempt(username, "a-wrong-guess", address)[0] for _ in range(times)]
    return responses


def assert_locked_out(response, *, limit_name: str, api: bool) -> int:
    """The lockout answer: 429, Retry-After, and when to retry, said."""
    assert response.status_code == 429
    wait = int(response["Retry-After"])
    assert 0 < wait <= 901
    if api:
        body = response.json()
        assert body["code"] == "rate_limited"
        assert body["limit_name"] == limit_name
        assert body["retry_after"] == wait
        assert f"for {wait} s more" in body["message"]
    else:
        page = response.content.decode()
        assert "Too many failed sign-ins" in page
        retry_at = T0 + timedelta(seconds=wait)
        assert f"Try again at <strong><time datetime=\"{retry_at.isoformat()}\">{retry_at:%H:%M} UTC" in page
    return wait


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda e: e.name)
def test_it_locks_an_account_after_the_limit_the_right_password_too(entry, carol):
    before = fail(entry, "carol", 4)
    assert all(entry.refused(r) for r in before)  # wrong passwords, each told as such

    fifth, _ = entry.attempt("carol", "a-wrong-guess")
    assert_locked_out(fifth, limit_name="login_failures_per_account", api=entry.name == "api")

    response, got_in = entry.attempt("carol", "pw-carol")
    assert not got_in
    wait = assert_locked_out(response, limit_name="login_failures_per_account", api=entry.name == "api")
    assert wait == 901  # one second past the lockout; tries meanwhile do not push it further
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda e: e.name)
def test_it_lets_the_account_in_once_the_time_it_gave_has_passed(entry, carol, time_machine):
    fail(entry, "carol", 5)
    time_machine.move_to(T0 + timedelta(seconds=899), tick=False)
    response, got_in = entry.attempt("carol", "pw-carol")
    assert (response.status_code, response["Retry-After"], got_in) == (429, "2", False)

    time_machine.move_to(T0 + timedelta(seconds=901), tick=False)  # as it said
    assert entry.attempt("carol", "pw-carol")[1]


def test_it_locks_the_account_from_every_address(carol):
    portal = ENTRY_POINTS[0]
    for i in range(5):
        portal.attempt("carol", "a-wrong-guess", address=f"198.18.1.{i}")
    response, got_in = portal.attempt("carol", "pw-carol", address=OTHER_CLIENT)
    assert not got_in
    assert response.status_code == 429


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda e: e.name)
def test_an_operator_lifts_the_lockout_in_the_admin(entry, carol):
    fail(entry, "carol", 5)
    assert not entry.attempt("carol", "pw-carol")[1]

    operator = Client()
    make_operator(operator)
    changelist = reverse("admin:axes_accessattempt_changelist")
    listed = operator.get(changelist + "?q=carol")
    assert listed.status_code == 200
    attempts = AccessAttempt.objects.filter(username="carol")
    assert attempts.exists()
    for attempt in attempts:
        assert str(attempt.pk) in listed.content.decode()
    # The changelist's "Delete selected" action, confirmed, as an operator does it.
    confirm = operator.post(changelist, {"action": "delete_selected",
                                         "_selected_action": [a.pk for a in attempts]})
    assert confirm.status_code == 200 and b"Are you sure" in confirm.content
    done = operator.post(changelist, {"action": "delete_selected", "post": "yes",
                                      "_selected_action": [a.pk for a in attempts]}, follow=True)
    assert done.status_code == 200
    assert not AccessAttempt.objects.filter(username="carol").exists()

    assert entry.attempt("carol", "pw-carol")[1]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda e: e.name)
def test_it_limits_an_address_trying_many_accounts(entry, carol):
    # 8 failures from one address, never more than 4 for one account (none is locked).
    for name in ("alice", "bob"):
        fail(entry, name, 4)
    response, got_in = entry.attempt("carol", "pw-carol")
    assert not got_in
    assert_locked_out(response, limit_name="login_failures_per_address", api=entry.name == "api")
    if entry.name != "api":
        assert re.search(r"Sign-in from your address\s+is locked after 8 failed attempts",
                         response.content.decode())

    # The same account from another address is not held up.
    assert entry.attempt("carol", "pw-carol", address=OTHER_CLIENT)[1]


def test_the_address_is_the_clients_as_the_trusted_proxies_tell_it(carol):
    portal = ENTRY_POINTS[0]
    # A client dialling the web server directly cannot pass for other addresses:
    # its X-Forwarded-For is dropped, every failure is its own address's.
    for i in range(8):
        portal.attempt(f"nobody{i}", "a-wrong-guess", address=CLIENT, HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")
    assert not portal.attempt("carol", "pw-carol", address=CLIENT)[1]
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {CLIENT}

    # Behind the trusted proxy (127.0.0.1), each client is its forwarded address.
    for i in range(8):
        portal.attempt(f"someone{i}", "a-wrong-guess", address="127.0.0.1", HTTP_X_FORWARDED_FOR=OTHER_CLIENT)
    assert not portal.attempt("carol", "pw-carol", address="127.0.0.1", HTTP_X_FORWARDED_FOR=OTHER_CLIENT)[1]
    assert portal.attempt("carol", "pw-carol", address="127.0.0.1", HTTP_X_FORWARDED_FOR="198.18.0.7")[1]


def test_the_lockout_page_names_the_account_and_links_back_to_sign_in(carol):
    portal = ENTRY_POINTS[0]
    fail(portal, "carol", 5)
    response, _ = portal.attempt("carol", "pw-carol")
    page = response.content.decode()
    assert re.search(r"Sign-in\s+as <strong>carol</strong>\s+is locked after 5 failed attempts", page)
    assert "in 16 minutes" in page  # 901 s, rounded up
    assert f'href="{reverse("login")}"' in page


def test_a_success_before_the_limit_does_not_wipe_the_failures(carol):
    """Else one account's owner could clear their address's count for every account."""
    portal = ENTRY_POINTS[0]
    fail(portal, "mallory", 4)
    fail(portal, "carol", 3)
    assert portal.attempt("carol", "pw-carol")[1]
    response, _ = portal.attempt("dave", "whatever")  # the 8th failure from this address
    assert response.status_code == 429
