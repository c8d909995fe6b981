"""/api/blueprints/: save, list, change, share, publish and launch, as a client sees them."""

from __future__ import annotations

from django.contrib.auth.models import Group

from envs import blueprints
from envs.models import Blueprint, Env
from tests.api_support import client_for
from tests.conftest import make_staff
from tests.envs.test_blueprints import FILE


def test_a_file_saved_is_listed_with_what_a_launch_needs(alice):
    api = client_for(alice)
    made = api.post("/api/blueprints/", {"name": "web", "text": FILE, "description": "two web servers"},
                    format="json")
    assert made.status_code == 201, made.content
    body = made.json()
    assert {k: body[k] for k in ("name", "owner", "description", "text", "env_name", "published", "mine",
                                 "shared_with_users", "shared_with_groups")} == {
        "name": "web", "owner": "alice", "description": "two web servers", "text": FILE, "env_name": "ci",
        "published": False, "mine": True, "shared_with_users": [], "shared_with_groups": []}
    listed = api.get("/api/blueprints/").json()["results"]
    assert [bp["id"] for bp in listed] == [body["id"]]


def test_a_bad_file_is_refused_with_its_line(alice):
    response = client_for(alice).post("/api/blueprints/", {"name": "web", "text": FILE.replace("128", "0")},
                                      format="json")
    assert response.status_code == 422, response.content
    body = response.json()
    assert (body["code"], body["line"]) == ("invalid", 6)
    assert body["problems"][0]["line"] == 6
    assert not Blueprint.objects.exists()


def test_others_private_blueprints_are_not_found(alice, bob):
    bp = blueprints.blueprint_save(by=alice, text=FILE)
    api = client_for(bob)
    assert api.get("/api/blueprints/").json()["results"] == []
    for method, path in (("get", ""), ("patch", ""), ("delete", ""), ("post", "share/"), ("post", "launch/")):
        response = getattr(api, method)(f"/api/blueprints/{bp.pk}/{path}", {}, format="json")
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "not_found"


def test_a_sharee_reads_and_launches_but_may_not_change(alice, bob, template, run_tasks):
    team = Group.objects.create(name="team")
    bob.groups.add(team)
    bp = blueprints.blueprint_save(by=alice, text=FILE)
    blueprints.blueprint_share(blueprint=bp, by=alice, groups=["team"])
    api = client_for(bob)

    seen = api.get(f"/api/blueprints/{bp.pk}/").json()
    assert (seen["owner"], seen["mine"], seen["shared_with_groups"]) == ("alice", False, ["team"])
    for method, path, body in (("patch", "", {"description": "x"}), ("delete", "", None),
                               ("post", "share/", {"users": ["bob"]})):
        response = getattr(api, method)(f"/api/blueprints/{bp.pk}/{path}", body, format="json")
        assert response.status_code == 403, (method, path)
        assert response.json()["code"] == "forbidden"
    with run_tasks():
        launched = api.post(f"/api/blueprints/{bp.pk}/launch/", {"name": "bobs"}, format="json",
                            HTTP_IDEMPOTENCY_KEY="k1")
    assert launched.status_code == 202, launched.content
    op = launched.json()
    assert op["kind"] == "env_create"
    assert launched["Location"].endswith(f"/api/operations/{op['id']}/")
    env = Env.objects.get(pk=op["env"])
    assert (env.owner, env.name, env.vms.count()) == (bob, "bobs", 2)
    again = api.post(f"/api/blueprints/{bp.pk}/launch/", {"name": "bobs"}, format="json",
                     HTTP_IDEMPOTENCY_KEY="k1")
    assert (again.status_code, again.json()["id"]) == (202, op["id"])


def test_a_launch_under_a_taken_name_is_refused_clearly(alice, template, run_tasks):
    bp = blueprints.blueprint_save(by=alice, text=FILE)
    api = client_for(alice)
    with run_tasks():
        assert api.post(f"/api/blueprints/{bp.pk}/launch/", format="json").status_code == 202
    response = api.post(f"/api/blueprints/{bp.pk}/launch/", format="json")
    assert response.status_code == 422
    assert response.json()["field"] == "name"
    assert "already" in response.json()["message"]


def test_the_owner_changes_and_shares_it(alice, bob):
    bp = blueprints.blueprint_save(by=alice, text=FILE)
    api = client_for(alice)
    changed = api.patch(f"/api/blueprints/{bp.pk}/", {"name": "renamed", "text": FILE.replace("2h", "3h")},
                        format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["name"] == "renamed"
    shared = api.post(f"/api/blueprints/{bp.pk}/share/", {"users": ["bob"], "groups": []}, format="json")
    assert (shared.status_code, shared.json()["shared_with_users"]) == (200, ["bob"])
    unknown = api.post(f"/api/blueprints/{bp.pk}/share/", {"users": ["nobody"]}, format="json")
    assert (unknown.status_code, unknown.json()["field"]) == (422, "users[0]")
    assert api.delete(f"/api/blueprints/{bp.pk}/").status_code == 204
    assert not Blueprint.objects.exists()


def test_only_staff_with_the_permission_publish(alice, bob):
    api = client_for(alice)
    refused = api.post("/api/blueprints/", {"name": "web", "text": FILE, "published": True}, format="json")
    assert refused.status_code == 403
    assert "envs.publish_blueprint" in refused.json()["message"]
    assert not Blueprint.objects.exists()  # nothing saved
    bp = blueprints.blueprint_save(by=alice, text=FILE)
    assert api.patch(f"/api/blueprints/{bp.pk}/", {"published": True}, format="json").status_code == 403

    publisher = client_for(make_staff("pat", "envs.publish_blueprint"))
    # Not shared with pat and pat may not view others': not found, like any other user.
    assert publisher.patch(f"/api/blueprints/{bp.pk}/", {"published": True}, format="json").status_code == 404
    operator = client_for(make_staff("pam", "envs.view_blueprint", "envs.publish_blueprint"))
    published = operator.patch(f"/api/blueprints/{bp.pk}/", {"published": True}, format="json")
    assert (published.status_code, published.json()["published"]) == (200, True)
    assert [b["name"] for b in client_for(bob).get("/api/blueprints/").json()["results"]] == ["ci"]


def test_the_count_is_capped(alice, settings):
    settings.TT_MAX_BLUEPRINTS_PER_USER = 1
    api = client_for(alice)
    assert api.post("/api/blueprints/", {"name": "one", "text": FILE}, format="json").status_code == 201
    response = api.post("/api/blueprints/", {"name": "two", "text": FILE}, format="json")
    assert response.status_code == 422
    assert "TT_MAX_BLUEPRINTS_PER_USER" in response.json()["message"]
