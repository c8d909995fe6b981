"""SSH keys through the service, the API (/api/keys/) and the portal page: added once,
named, listed with their fingerprint, deleted; every refusal names its field and
changes nothing; keys are personal."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import SshKey
from accounts.services import ssh_key_add
from tests.api_support import client_for
from tests.support import public_key_line
from ttportal import limits


def test_the_api_adds_a_key_and_shows_its_fingerprint(alice):
    line = public_key_line(comment="alice@laptop")
    api = client_for(alice)
    response = api.post("/api/keys/", {"public_key": line})
    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["type"], body["bits"], body["comment"]) == (
        "alice@laptop", "ssh-ed25519", 256, "alice@laptop")
    assert body["public_key"] == line.strip()
    assert body["fingerprint"].startswith("SHA256:")
    assert [k["id"] for k in api.get("/api/keys/").json()["results"]] == [body["id"]]
    assert api.delete(f"/api/keys/{body['id']}/").status_code == 204
    assert not SshKey.objects.exists()


def test_a_key_without_a_comment_is_named_by_its_fingerprint(alice):
    key = ssh_key_add(user=alice, public_key=public_key_line(comment=""))
    assert key.name == key.fingerprint


@pytest.mark.parametrize(("body", "field", "status"), [
    ({"public_key": "hello"}, "public_key", 400),
    ({"public_key": "ssh-ed25519 AAAA"}, "public_key", 422),  # well-formed, but no key in it
    ({"public_key": public_key_line("rsa", bits=1024)}, "public_key", 422),
    ({}, "public_key", 400),
    ({"public_key": public_key_line(), "name": ""}, "name", 400),
    ({"public_key": public_key_line(), "name": "x" * 101}, "name", 400),
    ({"public_key": public_key_line(), "colour": "blue"}, "colour", 400),
])
def test_the_api_refuses_a_bad_key_naming_the_field(alice, db_state, body, field, status):
    before = db_state()
    response = client_for(alice).post("/api/keys/", body)
    assert response.status_code == status, response.content
    assert (response.json()["code"], response.json()["field"]) == ("invalid", field)
    assert db_state() == before


def test_a_key_is_kept_once_and_a_name_once(alice, bob, db_state):
    line = public_key_line(comment="laptop")
    first = ssh_key_add(user=alice, public_key=line)
    api = client_for(alice)
    before = db_state()
    response = api.post("/api/keys/", {"public_key": line, "name": "again"})
    assert response.status_code == 422
    assert response.json()["message"] == "you already have this key, named 'laptop'"
    response = api.post("/api/keys/", {"public_key": public_key_line(comment="laptop")})
    assert (response.status_code, response.json()["field"]) == (422, "name")
    assert db_state() == before
    # Someone else may keep the same public key (a shared deploy key, say).
    assert ssh_key_add(user=bob, public_key=line).fingerprint == first.fingerprint


def test_a_user_keeps_at_most_the_limit(alice, monkeypatch):
    monkeypatch.setattr(limits, "SSH_KEYS_MAX", 2)
    ssh_key_add(user=alice, public_key=public_key_line(comment="a"))
    ssh_key_add(user=alice, public_key=public_key_line(comment="b"))
    response = client_for(alice).post("/api/keys/", {"public_key": public_key_line(comment="c")})
    assert response.status_code == 422
    assert "the most one keeps" in response.json()["message"]
    assert SshKey.objects.count() == 2


def test_keys_are_personal_even_for_staff(alice, olga):
    key = ssh_key_add(user=alice, public_key=public_key_line())
    api = client_for(olga)
    assert api.get("/api/keys/").json()["results"] == []
    assert api.get(f"/api/keys/{key.pk}/").status_code == 404
    assert api.delete(f"/api/keys/{key.pk}/").status_code == 404
    assert SshKey.objects.filter(pk=key.pk).exists()


# --- the portal page ------------------------------------------------------------------

def test_the_page_adds_a_pasted_key_and_lists_it(client, alice):
    client.force_login(alice)
    line = public_key_line(comment="alice@laptop")
    # A paste brings surrounding blanks and a Windows line end: the form drops them.
    response = client.post(reverse("accounts:ssh_keys"), {"public_key": f"  {line.strip()}\r\n", "name": ""},
                           follow=True)
    key = SshKey.objects.get()
    assert key.name == "alice@laptop"
    page = response.content.decode()
    assert key.fingerprint in page and "ssh-ed25519 (256 bits)" in page
    assert "Added the key alice@laptop" in page


@pytest.mark.parametrize(("public_key", "says"), [
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
     "is a private key"),
    ("ssh-ed25519 AAAA", "does not decode"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "OpenSSH public key"),
])
def test_the_page_shows_a_refusal_beside_the_key_and_keeps_the_paste(client, alice, public_key, says):
    client.force_login(alice)
    response = client.post(reverse("accounts:ssh_keys"), {"public_key": public_key})
    assert response.status_code == 200
    assert says in response.context["form"].errors["public_key"][0]
    assert not SshKey.objects.exists()


def test_the_page_deletes_a_key_and_not_someone_elses(client, alice, bob):
    mine = ssh_key_add(user=alice, public_key=public_key_line())
    theirs = ssh_key_add(user=bob, public_key=public_key_line())
    client.force_login(alice)
    assert client.post(reverse("accounts:ssh_key_delete", args=[theirs.pk])).status_code == 404
    response = client.post(reverse("accounts:ssh_key_delete", args=[mine.pk]))
    assert response.status_code == 302
    assert list(SshKey.objects.all()) == [theirs]
