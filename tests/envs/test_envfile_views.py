"""The portal's Env files: import on the New Env page (pasted or uploaded, through the same
parser as the API, problems shown with their lines) and "Download as tt.yaml"."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

import envfile
from envs.models import Env

pytestmark = pytest.mark.usefixtures("frozen_clock")

FILE = "name: ci\nlifetime: 90m\nvms:\n  - name: web[1..2]\n    template: tt/busybox\n    ports: [80]\n"


def post_file(client, text: str = "", upload: bytes | None = None):
    data = {"file-text": text, "file-idempotency_key": "k"}
    if upload is not None:
        data["file-upload"] = SimpleUploadedFile("tt.yaml", upload, content_type="application/yaml")
    return client.post(reverse("envs:create"), data)


def test_the_new_env_page_offers_the_import(client, alice, template):
    client.force_login(alice)
    body = client.get(reverse("envs:create")).content.decode()
    assert "Or from an Env file" in body and 'name="file-text"' in body and 'name="file-upload"' in body
    assert 'enctype="multipart/form-data"' in body


@pytest.mark.parametrize("how", ["pasted", "uploaded"])
def test_a_file_makes_its_env(client, alice, template, how):
    client.force_login(alice)
    response = post_file(client, FILE) if how == "pasted" else post_file(client, upload=FILE.encode())
    env = Env.objects.get(owner=alice, name="ci")
    assert response.status_code == 302 and response["Location"] == reverse("envs:detail", args=[env.pk])
    assert sorted(env.vms.values_list("name", flat=True)) == ["web1", "web2"]
    assert (env.end_at - env.start_at).total_seconds() == 5400


def test_a_double_submit_makes_one_env(client, alice, template):
    client.force_login(alice)
    post_file(client, FILE)
    assert post_file(client, FILE).status_code == 302
    assert Env.objects.filter(name="ci").count() == 1


def test_problems_are_shown_with_their_lines(client, alice, template, db_state):
    client.force_login(alice)
    before = db_state()
    text = "name: ci\nvms:\n  - name: web\n    template: tt/busybox\n    mem_mb: 0\n    colour: blue\n"
    response = post_file(client, text)
    assert response.status_code == 200
    body = response.content.decode()
    assert "line 5: vms[0].mem_mb: must be an integer between 1 and 262144 MiB" in body
    assert "line 6: vms[0].colour: is not a field of a VM" in body
    assert text.splitlines()[0] in body  # the file stays in the box, to be fixed
    assert db_state() == before


def test_the_server_s_refusal_names_the_line_too(client, alice, template, db_state):
    client.force_login(alice)
    before = db_state()
    body = post_file(client, FILE.replace("tt/busybox", "tt/none")).content.decode()
    assert "line 5: vms[0].template: must name an existing, enabled template" in body
    assert db_state() == before


@pytest.mark.parametrize(("text", "upload", "said"), [
    ("", None, "paste an Env file or upload one"),
    ("", b"\xff\xfe", "the uploaded file is not UTF-8 text"),
    ("name: ci\nvms: [\n", None, "line 3: is not valid YAML"),
])
def test_what_is_no_file(client, alice, template, text, upload, said):
    client.force_login(alice)
    assert said in post_file(client, text, upload).content.decode()


def test_download_as_tt_yaml_loads_back_as_the_same_env(client, alice, make_env):
    env = make_env(alice, name="demo", vms=2)
    client.force_login(alice)
    page = client.get(reverse("envs:detail", args=[env.pk])).content.decode()
    assert f'href="{reverse("envs:download", args=[env.pk])}"' in page and "Download as tt.yaml" in page
    response = client.get(reverse("envs:download", args=[env.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="demo.tt.yaml"'
    ef = envfile.load(response.content.decode())
    assert ef.name == "demo"
    assert [(vm["name"], vm["template"]) for vm in ef.vms] == [("vm0", "tt/busybox"), ("vm1", "tt/busybox")]


def test_nobody_downloads_another_s_env(client, alice, bob, make_env):
    env = make_env(alice)
    client.force_login(bob)
    assert client.get(reverse("envs:download", args=[env.pk])).status_code == 404
