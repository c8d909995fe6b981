"""No event holds a secret (a token's, a webhook's, a password), user data, a file's
contents, a command line's arguments or a command's output, whatever the action."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from tests.admin_support import make_operator
from tests.api_support import client_for
from tests.vms.guest_support import FakeGuest, install, with_ways_in
from vms import guest_access
from vms.models import CLOUD_INIT

USER_DATA = "#cloud-config\npassword: user-data-marker-7431\n"
COMMAND_SECRET = "cmdline-marker-p4ss"
FILE_CONTENT = b"file-content-marker-9911"
PASSWORD = "pw-alice"
WRONG_PASSWORD = "wrong-password-marker-55"


@pytest.fixture
def guest(monkeypatch, template) -> FakeGuest:
    with_ways_in(template)
    template.features = [*template.features, CLOUD_INIT]  # so a VM takes user data
    template.save(update_fields=["features"])
    return install(monkeypatch, FakeGuest())


def everything_recorded() -> str:
    rows = list(AuditEvent.objects.values())
    assert rows
    return json.dumps(rows, default=str)


def test_no_event_holds_a_secret_user_data_or_output(client, alice, make_env, guest):
    api = client_for(alice)
    # tokens and webhooks: their secrets are answered once, never recorded
    client.force_login(alice)
    answer = client.post("/api/tokens/", {"name": "laptop"}, content_type="application/json")
    token_secret = answer.json()["token"]
    hook = api.post("/api/webhooks/", {"endpoint": "https://ci.example.com/hook?key=hook-url-secret"},
                    format="json").json()
    client.logout()
    # passwords: a failed and a good login
    client.post(reverse("login"), {"username": "alice", "password": WRONG_PASSWORD})
    client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    # user data, a command line with a secret and its output, a file's contents
    response = api.post("/api/envs/", {"name": "ud", "vms": [{"name": "a", "template": "tt/busybox",
                                                               "user_data": USER_DATA}]}, format="json")
    assert response.status_code == 202, response.content
    vm = make_env(alice, name="guest").vms.get()
    result = guest_access.vm_exec(vm, by=alice, command=["echo", COMMAND_SECRET])
    assert COMMAND_SECRET.encode() in result.stdout
    guest_access.vm_file_put(vm, by=alice, path="/tmp/f", chunks=[FILE_CONTENT], size=len(FILE_CONTENT))
    # an operator changes alice's password in the admin: the field is named, its value never
    root_client = client.__class__()
    make_operator(root_client)
    root_client.post(reverse("admin:auth_user_password_change", args=[alice.pk]),
                     {"password1": "new-pass-marker-8080!", "password2": "new-pass-marker-8080!",
                      "usable_password": "true"})

    text = everything_recorded()
    for secret in (token_secret, hook["secret"], "hook-url-secret", WRONG_PASSWORD, PASSWORD,
                   "user-data-marker-7431", COMMAND_SECRET, FILE_CONTENT.decode(), "new-pass-marker-8080"):
        assert secret not in text, secret
    verbs = set(AuditEvent.objects.values_list("verb", flat=True))
    assert {"token.create", "webhook.create", "login.failed", "login", "env.create", "vm.exec", "vm.file_put",
            "admin.change"} <= verbs
    exec_event = AuditEvent.objects.get(verb="vm.exec")
    assert exec_event.detail["program"] == "echo" and len(exec_event.detail["command_sha256"]) == 64
