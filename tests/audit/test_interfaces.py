"""The same verbs through each interface: the API (and the `tt` command), the portal, the
admin; logins; where each came from."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import ApiToken, UserQuota
from accounts.services import token_create
from audit.models import AuditEvent
from tests.admin_support import make_operator, post_action
from tests.api_support import client_for, token_client


def events(**filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(**filters))


@pytest.fixture
def env(alice, make_env):
    return make_env(alice)


@pytest.mark.parametrize(("agent", "interface"),
                         [("curl/8.5", "api"), ("ttclient/0.1", "cli"), ("tt/2.0", "cli")])
def test_an_api_action_records_the_api_its_token_and_address(alice, env, agent, interface):
    token, secret = token_create(user=alice, name="ci")
    client = token_client(secret)
    response = client.post(f"/api/envs/{env.pk}/stop/", HTTP_USER_AGENT=agent, REMOTE_ADDR="198.51.100.7")
    assert response.status_code == 202, response.content
    (event,) = events(verb="env.stop")
    assert (event.interface, event.user, event.token_id, event.address, event.user_agent, event.result) == (
        interface, alice, str(token.public_id), "198.51.100.7", agent, "ok")


@pytest.mark.parametrize(("path", "body", "verb"), [("/api/envs/{env}/stop/", None, "env.stop"),
                                                     ("/api/envs/{env}/clone/", {"count": 1}, "env.clone"),
                                                     ("/api/vms/{vm}/stop/", None, "vm.stop")])
def test_a_replayed_idempotency_key_records_no_second_event(alice, env, path, body, verb):
    token, secret = token_create(user=alice, name="ci")
    client = token_client(secret)
    url = path.format(env=env.pk, vm=env.vms.get().pk)
    first, again = (client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="retry-1") for _ in range(2))
    assert first.status_code == again.status_code == 202, again.content
    assert again.json()["id"] == first.json()["id"]  # the first request's operation: it did not run again
    (event,) = events(verb=verb)
    assert (event.user, event.result, event.token_id, event.detail["operation"]) == (
        alice, "ok", str(token.public_id), first.json()["id"])
    # The same key for another request is refused, and that refusal is recorded.
    other = client.post(f"/api/envs/{env.pk}/extend/", {"lifetime": 7200}, format="json",
                        HTTP_IDEMPOTENCY_KEY="retry-1")
    assert other.status_code == 422, other.content
    (refusal,) = events(verb="env.extend")
    assert (refusal.result, refusal.code) == ("refused", "idempotency_key_reused")


def test_an_api_refusal_is_recorded_once_as_refused(alice, bob, env):
    response = client_for(bob).post(f"/api/envs/{env.pk}/stop/")
    assert response.status_code == 404  # bob does not see it: refused before any service
    assert not events(verb="env.stop")
    body = {"name": "demo", "vms": [{"name": "a", "template": "tt/busybox"}]}  # taken: her live Env's
    response = client_for(alice).post("/api/envs/", body, format="json")
    assert response.status_code == 422, response.content
    (event,) = events(verb="env.create", interface="api")
    assert (event.result, event.code, event.interface) == ("refused", "invalid", "api")


def test_an_api_token_creation_through_the_portal_session_is_recorded_without_its_secret(client, alice):
    client.force_login(alice)
    response = client.post("/api/tokens/", {"name": "laptop"}, content_type="application/json")
    assert response.status_code == 201, response.content
    secret = response.json()["token"]
    (event,) = events(verb="token.create")
    assert (event.user, event.interface, event.object_name) == (alice, "api", "laptop")
    assert event.object_id == str(ApiToken.objects.get(name="laptop").public_id)
    assert secret not in str(AuditEvent.objects.values())


def test_a_portal_action_records_the_portal(client, alice, env, run_tasks):
    client.force_login(alice)
    with run_tasks():
        response = client.post(reverse("envs:stop", args=[env.pk]), REMOTE_ADDR="192.0.2.44")
    assert response.status_code in (200, 302)
    (event,) = events(verb="env.stop")
    assert (event.interface, event.user, event.address, event.result) == ("portal", alice, "192.0.2.44", "ok")


def test_a_clone_through_the_portal_is_one_event_on_the_source_and_a_refused_one_is_refused(
        client, alice, bob, env, run_tasks):
    client.force_login(alice)
    with run_tasks():
        response = client.post(reverse("envs:clone", args=[env.pk]), {"count": "2"}, REMOTE_ADDR="192.0.2.44")
    assert response.status_code == 302
    (event,) = events(verb="env.clone")
    assert (event.interface, event.user, event.object_id, event.address, event.result) == (
        "portal", alice, str(env.pk), "192.0.2.44", "ok")
    assert not events(verb="env.create", interface="portal")  # the clones are the clone's, no creates
    client.post(reverse("envs:clone", args=[env.pk]), {"count": "11"})  # past COUNT_MAX
    assert [(e.result, e.code) for e in AuditEvent.objects.filter(verb="env.clone").order_by("pk")] == [
        ("ok", ""), ("refused", "invalid")]


def test_logins_failed_logins_and_logouts_are_recorded(client, alice):
    login = reverse("login")
    client.post(login, {"username": "alice", "password": "wrong"}, REMOTE_ADDR="203.0.113.9")
    client.post(login, {"username": "alice", "password": "pw-alice"}, REMOTE_ADDR="203.0.113.9")
    client.post(reverse("logout"))
    failed, ok, out = (events(verb=v) for v in ("login.failed", "login", "logout"))
    assert [(e.username, e.user, e.result, e.code, e.address) for e in failed[0:1]] == [
        ("alice", None, "refused", "login_failed", "203.0.113.9")]
    assert [(e.user, e.result, e.interface) for e in ok] == [(alice, "ok", "portal")]
    assert [e.user for e in out] == [alice]


def test_a_failed_login_is_still_counted_by_the_lockout(client, alice, settings):
    from axes.models import AccessAttempt

    client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert AccessAttempt.objects.filter(username="alice").exists()
    assert len(events(verb="login.failed")) == 1


def test_an_admin_action_records_the_admin(client, alice, env, run_tasks):
    root = make_operator(client)
    with run_tasks():
        post_action(client, reverse("admin:envs_env_changelist"), "stop", [env])
    (event,) = events(verb="env.stop")
    assert (event.interface, event.user, event.owner_id) == ("admin", root, alice.pk)


def test_a_quota_change_in_the_admin_is_quota_change_with_the_fields_changed(client, alice):
    make_operator(client)
    quota = UserQuota.objects.create(user=alice, vms=3)
    url = reverse("admin:accounts_userquota_change", args=[quota.pk])
    form = client.get(url).context["adminform"].form
    data = {name: ("" if value is None else value) for name, value in form.initial.items()
            if name in form.fields}
    data.update(user=alice.pk, vms=5)
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    (event,) = events(verb="quota.change")
    assert (event.interface, event.owner_id, event.object_type) == ("admin", alice.pk, "userquota")
    assert event.detail["fields"] == ["Live VMs"] or "vms" in str(event.detail["fields"]).lower()


def test_an_admin_edit_of_a_plain_model_is_admin_change(client, alice):
    make_operator(client)
    url = reverse("admin:auth_user_change", args=[alice.pk])
    form = client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if name in form.fields and value is not None}
    data.update(first_name="Alice", date_joined_0=alice.date_joined.strftime("%Y-%m-%d"),
                date_joined_1=alice.date_joined.strftime("%H:%M:%S"))
    data.pop("date_joined", None)
    data.pop("last_login", None)
    data["groups"] = []
    data["user_permissions"] = []
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    (event,) = events(verb="admin.change")
    assert (event.object_type, event.object_name, event.detail["model"]) == ("user", "alice", "auth.user")
    assert "First name" in event.detail["fields"]
    assert "pw-alice" not in str(event.detail)
