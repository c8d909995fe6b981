"""GET /api/audit/: staff holding audit.view_auditevent read every event; an Env's owner
the events on her Env (staff's too) and her account's; nobody another user's."""

from __future__ import annotations

import pytest

from audit.recording import record
from envs import services
from tests.api_support import client_for
from tests.conftest import make_staff


@pytest.fixture
def world(alice, bob, make_env):
    mine = make_env(alice, name="mine")
    theirs = make_env(bob, name="theirs")
    olga = make_staff("olga2", "envs.change_env")
    services.env_stop(env=mine, by=olga)  # staff on alice's Env: hers to read
    record("login", by=bob)
    return mine, theirs


def verbs(response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.content
    return sorted((e["verb"], e["username"]) for e in response.json()["results"])


def test_an_owner_reads_her_envs_events_and_her_accounts_never_anothers(alice, bob, world):
    _, theirs = world
    assert verbs(client_for(alice).get("/api/audit/")) == [
        ("env.create", "alice"), ("env.stop", "olga2"), ("token.create", "alice")]
    seen_by_bob = client_for(bob).get("/api/audit/").json()["results"]
    assert {e["env"] for e in seen_by_bob} <= {theirs.pk, None}
    assert "alice" not in {e["username"] for e in seen_by_bob}


def test_another_users_event_is_not_found(alice, bob, world):
    mine, _ = world
    from audit.models import AuditEvent

    hers = AuditEvent.objects.filter(env_id=mine.pk).first()
    assert client_for(bob).get(f"/api/audit/{hers.pk}/").status_code == 404
    assert client_for(alice).get(f"/api/audit/{hers.pk}/").status_code == 200


def test_staff_with_the_permission_read_everything_and_filter(alice, bob, world):
    mine, _ = world
    auditor = make_staff("audrey", "audit.view_auditevent")
    client = client_for(auditor)
    every = client.get("/api/audit/").json()
    assert {"alice", "bob", "olga2"} <= {e["username"] for e in every["results"]}
    assert verbs(client.get("/api/audit/", {"env": mine.pk})) == [
        ("env.create", "alice"), ("env.stop", "olga2")]
    assert verbs(client.get("/api/audit/", {"verb": "login"})) == [("login", "bob")]
    assert [v for v, _ in verbs(client.get("/api/audit/", {"verb": "env."}))] == [
        "env.create", "env.create", "env.stop"]
    assert verbs(client.get("/api/audit/", {"user": bob.pk, "verb": "env.create"})) == [("env.create", "bob")]
    assert verbs(client.get("/api/audit/", {"until": "2000-01-01T00:00:00Z"})) == []
    assert len(verbs(client.get("/api/audit/", {"since": "2000-01-01T00:00:00Z"}))) == every["count"]


def test_staff_without_the_permission_read_only_their_own(alice, world):
    stan = make_staff("stan2", "envs.view_env")
    assert verbs(client_for(stan).get("/api/audit/")) == [("token.create", "stan2")]


def test_a_bad_filter_is_a_400_naming_it(alice, world):
    response = client_for(alice).get("/api/audit/", {"env": "x"})
    assert response.status_code == 400
    assert "env" in str(response.json())


@pytest.mark.parametrize("since, until, seen", [
    # Any offset the syntax allows is taken, turned into UTC (PostgreSQL refuses +16:39 as is).
    ("1097-12-13T18:39:01+16:39", "9999-12-30T00:00:00-16:39", True),
    ("2999-01-01T00:00:00+00:00", "", False),
])
def test_since_and_until_take_any_offset(alice, world, since, until, seen):
    query = f"?since={since.replace('+', '%2B')}" + (f"&until={until}" if until else "")
    response = client_for(alice).get(f"/api/audit/{query}")
    assert response.status_code == 200, response.content
    assert bool(response.json()["results"]) is seen


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00%2B01:00", "9999-12-31T23:59:59-01:00", "yesterday"])
def test_a_time_utc_cannot_hold_is_refused_naming_the_parameter(alice, world, value):
    response = client_for(alice).get(f"/api/audit/?since={value}")
    assert response.status_code == 400, response.content
    assert "since" in response.json()["errors"]
