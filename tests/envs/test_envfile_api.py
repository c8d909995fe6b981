"""Env files through the API: the published schema, POST /api/envs/?format=envfile making the
same Env as the JSON body, refusals naming the file's line, peers, and the export round trip."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest
from rest_framework.test import APIClient

import envfile
from envs.models import Env, Peering
from operations.models import Operation
from tests.api_support import client_for
from tests.support import T0
from vms.models import CLOUD_INIT

pytestmark = pytest.mark.usefixtures("frozen_clock")

FILE = """\
name: ci
lifetime: 2h
deny_outgoing: true
vms:
  - name: web[1..2]
    template: tt/busybox
    mem_mb: 128
    ports: [80, 53/udp]
  - name: db
    template: tt/busybox
    cpu_num: 2
    disk_mb: 40
"""


def post_file(api, text: str, *, content_type="application/yaml", query="?format=envfile", **extra):
    return api.generic("POST", f"/api/envs/{query}", text.encode(), content_type=content_type, **extra)


def shape(env: Env) -> dict:
    """What a user would compare between two Envs: everything but ids, addresses and times."""
    return {
        "lifetime": (env.end_at - env.start_at).total_seconds(), "deny_outgoing": env.deny_outgoing,
        "vms": sorted(
            (vm.name, vm.template.name, vm.cpu_num, vm.mem_mb, vm.disk_mb, vm.net_kind, vm.user_data,
             vm.keep_image, vm.rand_uuid,
             tuple(sorted((m.protocol, m.inner_port) for m in vm.port_mappings.all())))
            for vm in env.vms.live()
        ),
    }


def test_the_schema_is_published_without_a_login(db):
    response = APIClient().get("/api/schema/envfile.json")
    assert response.status_code == 200
    assert response.json() == {"$id": "http://testserver/api/schema/envfile.json", **envfile.schema()}


def test_a_file_makes_the_same_env_as_the_json_body(alice, template, run_tasks):
    api = client_for(alice)
    with run_tasks():
        from_file = post_file(api, FILE)
        body = envfile.load(FILE).to_create_body()
        from_json = api.post("/api/envs/", {**body, "name": "ci-json"})
    assert (from_file.status_code, from_json.status_code) == (202, 202)
    op = from_file.json()
    assert op["kind"] == "env_create"
    assert Operation.objects.get(pk=op["id"]).status == "succeeded"
    made = Env.objects.get(pk=op["env"])
    assert made.name == "ci" and made.end_at == T0 + timedelta(hours=2)
    assert shape(made) == shape(Env.objects.get(pk=from_json.json()["env"]))
    assert [vm["name"] for vm in api.get(f"/api/envs/{made.pk}/").json()["vms"]] == ["db", "web1", "web2"]


@pytest.mark.parametrize(("content_type", "query"), [
    ("text/yaml", ""),  # a YAML Content-Type says it alone
    ("application/yaml; charset=utf-8", "?format=envfile"),
])
def test_a_yaml_content_type_is_enough(alice, template, content_type, query):
    assert post_file(client_for(alice), FILE, content_type=content_type, query=query).status_code == 202


def test_the_document_may_come_as_json(alice, template):
    import json

    document = envfile.load(FILE).document()
    response = post_file(client_for(alice), json.dumps(document), content_type="application/json")
    assert response.status_code == 202


def test_a_bad_file_is_refused_naming_each_line_and_field(alice, template, db_state):
    before = db_state()
    text = textwrap.dedent("""\
        name: ci
        vms:
          - name: web
            template: tt/busybox
            mem_mb: 0
            colour: blue
        """)
    response = post_file(client_for(alice), text)
    assert response.status_code == 422
    body = response.json()
    assert (body["code"], body["field"], body["line"]) == ("invalid", "vms[0].mem_mb", 5)
    assert body["message"] == "line 5: must be an integer between 1 and 262144 MiB"
    assert body["problems"] == [
        {"line": 5, "field": "vms[0].mem_mb", "message": "must be an integer between 1 and 262144 MiB"},
        {"line": 6, "field": "vms[0].colour", "message": "is not a field of a VM (its fields: name, "
         "template, cpu_num, mem_mb, disk_mb, ports, net_kind, user_data, keep_image, rand_uuid)"},
    ]
    assert set(body["errors"]) == {"vms[0].mem_mb", "vms[0].colour"}
    assert db_state() == before


def test_what_the_server_refuses_is_told_against_the_file(alice, template, db_state, settings):
    settings.TT_MAX_ENV_LIFETIME = 3600
    before = db_state()
    text = "name: ci\nlifetime: 1d\nvms:\n  - name: web[1..3]\n    template: tt/nothing\n"
    body = post_file(client_for(alice), text).json()
    # EnvCreate's check of the expanded body: the lifetime past the server's longest.
    assert (body["field"], body["line"]) == ("lifetime", 2)
    body = post_file(client_for(alice), text.replace("1d", "1h")).json()
    # env_create's check: the third VM (a count's) names no template: its entry's line.
    assert (body["code"], body["field"], body["line"]) == ("invalid", "vms[0].template", 5)
    assert body["message"] == "line 5: must name an existing, enabled template"
    assert db_state() == before


def test_the_server_never_reads_a_file_the_env_file_names(alice, template):
    text = "name: ci\nvms:\n  - name: web\n    template: tt/busybox\n    user_data: '@/etc/passwd'\n"
    body = post_file(client_for(alice), text).json()
    assert (body["field"], body["line"]) == ("vms[0].user_data", 5)
    assert "only the tt command reads" in body["message"]


def test_bad_yaml_and_bodies_that_are_no_file(alice, template):
    api = client_for(alice)
    body = post_file(api, "name: ci\nvms: [\n").json()
    assert (body["code"], body["line"]) == ("invalid", 3) and "is not valid YAML" in body["message"]
    assert post_file(api, "x" * 70000).status_code == 400
    response = api.generic("POST", "/api/envs/?format=envfile", b"\xff\xfe", content_type="application/yaml")
    assert (response.status_code, response.json()["field"]) == (400, "body")
    assert post_file(api, FILE, content_type="application/xml").status_code == 415
    assert post_file(api, FILE, query="?format=envfile&format=envfile").status_code == 400
    assert post_file(api, FILE, query="?format=yml").json()["field"] == "format"


def test_an_env_file_takes_an_idempotency_key(alice, template):
    api = client_for(alice)
    first = post_file(api, FILE, HTTP_IDEMPOTENCY_KEY="k1")
    again = post_file(api, FILE, HTTP_IDEMPOTENCY_KEY="k1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["id"] == again.json()["id"]
    assert Env.objects.filter(name="ci").count() == 1


def test_peers_are_asked_with_the_env(alice, bob, make_env, run_tasks):
    mine = make_env(alice, name="db")
    theirs = make_env(bob, name="shared")
    text = "name: ci\npeers: [db, bob/shared]\nvms:\n  - {name: web, template: tt/busybox}\n"
    with run_tasks():
        response = post_file(client_for(alice), text)
    assert response.status_code == 202
    env = Env.objects.get(pk=response.json()["env"])
    statuses = {p.other(env).pk: p.status for p in Peering.objects.of(env)}
    # Her own Env at once; bob's asked, for bob to accept.
    assert statuses == {mine.pk: Peering.Status.ACTIVE, theirs.pk: Peering.Status.PENDING}
    assert Operation.objects.get(pk=response.json()["id"]).status == "succeeded"
    # The new VM lets the peer in: it was created knowing its peering.
    vm = env.vms.get()
    assert mine.pk in vm.to_spec().reach
    # And the export asks for the same peers again.
    exported = envfile.load(client_for(alice).get(f"/api/envs/{env.pk}/envfile/").content.decode())
    assert sorted(exported.peers) == ["bob/shared", "db"]


def test_a_peer_that_does_not_exist_refuses_the_whole_file(alice, template, db_state):
    before = db_state()
    text = "name: ci\npeers:\n  - nope\nvms:\n  - {name: web, template: tt/busybox}\n"
    body = post_file(client_for(alice), text).json()
    assert (body["code"], body["field"], body["line"]) == ("invalid", "peers[0]", 3)
    assert body["message"] == "line 3: no live Env alice/nope"
    assert db_state() == before


def test_export_then_up_makes_the_same_shape(alice, template, run_tasks):
    template.features = [CLOUD_INIT]
    template.save()
    api = client_for(alice)
    text = FILE + "    user_data: |\n      #cloud-config\n      runcmd: [true]\n  - name: flat\n" \
                  "    template: tt/busybox\n    net_kind: flat\n    keep_image: true\n    rand_uuid: false\n"
    with run_tasks():
        first = Env.objects.get(pk=post_file(api, text).json()["env"])
    exported = api.get(f"/api/envs/{first.pk}/envfile/")
    assert exported.status_code == 200
    assert exported["Content-Type"] == "text/yaml; charset=utf-8"
    asked = api.get(f"/api/envs/{first.pk}/envfile/", HTTP_ACCEPT="application/yaml")
    assert (asked["Content-Type"], asked.content) == ("application/yaml; charset=utf-8", exported.content)
    yaml_text = exported.content.decode()
    assert "lifetime: 2h\n" in yaml_text
    with run_tasks():
        again = post_file(api, yaml_text.replace("name: ci\n", "name: ci-again\n", 1))
    assert again.status_code == 202, again.json()
    second = Env.objects.get(pk=again.json()["env"])
    assert shape(second) == shape(first)
    assert len(shape(first)["vms"]) == 4


def test_nobody_exports_another_s_env(alice, bob, make_env):
    env = make_env(alice)
    refused = client_for(bob).get(f"/api/envs/{env.pk}/envfile/", HTTP_ACCEPT="application/yaml")
    assert (refused.status_code, refused["Content-Type"]) == (404, "application/json")
    assert APIClient().get(f"/api/envs/{env.pk}/envfile/").status_code == 401
