"""One control plane for every engine kind: only templates some enabled node can run are
offered (portal forms and pages, API), each VM says which engine runs it, and a disk size
the engine cannot give is refused before anything is written, through every interface.

The docker node's socket does not exist: nothing here may set up its engine (only a task
would, and none runs for it), which the `docker_node` fixture enforces.
"""

from __future__ import annotations

import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from engines.docker.engine import DockerEngine
from engines.specs import Feature
from envs.models import Env
from envs.services import env_create
from nodes.models import EngineKind, Node
from operations.models import Operation
from tests.admin_support import make_operator
from tests.api_support import client_for
from vms.kinds import VmKind
from vms.models import Vm, VmTemplate
from vms.new_vms import NewVm, wanted_features

pytestmark = pytest.mark.usefixtures("frozen_clock")

CONTAINER = "tt/busybox-container"
CONTAINER_MB = 8  # the container template's size: its default disk
NO_DISK = f"{CONTAINER} runs here on docker, which cannot give a VM a disk larger than its template's"


@pytest.fixture
def docker_node(db, monkeypatch):
    def no_init(self):
        raise AssertionError("the docker engine was set up")

    monkeypatch.setattr(DockerEngine, "init", no_init)
    # As an engine that cannot size a disk: docker could not before issue 22 (now its
    # layers are limited, or watched), and these tests keep that refusal path honest.
    monkeypatch.setattr(DockerEngine, "features", DockerEngine.features - {Feature.DISK_LIMIT})
    return Node.objects.create(name="dock-1", kind="docker", uri="unix:///nonexistent.sock",
                               public_host="203.0.113.20", vm_network="10.101.0.0/16")


@pytest.fixture
def container(db):
    """What the docker engine registers (vms.template_install.install_busybox_image)."""
    return VmTemplate.objects.create(name=CONTAINER, path="tt/busybox:test", compatible_engines=["docker"],
                                     size_mb=CONTAINER_MB, min_mem_mb=16, default_ports=["80"])


@pytest.fixture
def idle(db):
    """Templates no enabled node can run: a firecracker one (no such node) and a disabled one."""
    return [
        VmTemplate.objects.create(name="tt/firecracker-only", path="fc.ext4",
                                  compatible_engines=["firecracker"]),
        VmTemplate.objects.create(name="tt/retired", path="old.qcow2", compatible_engines=["libvirt"],
                                  enabled=False),
    ]


def names(templates) -> list[str]:
    return [t.name for t in templates]


def vm_rows(response) -> dict[str, dict]:
    return {row["name"]: row for row in response.context["vms"]}


# --- which templates are offered ------------------------------------------------------------


def test_it_offers_templates_some_enabled_node_runs(node, template, container, idle):
    assert names(VmTemplate.objects.runnable()) == ["tt/busybox"]
    docker = Node.objects.create(name="dock-1", kind="docker", uri="unix:///nonexistent.sock",
                                 public_host="203.0.113.20", vm_network="10.101.0.0/16")
    assert names(VmTemplate.objects.runnable()) == ["tt/busybox", CONTAINER]
    Node.objects.filter(pk=docker.pk).update(enabled=False)
    Node.objects.filter(pk=node.pk).update(enabled=False)
    assert names(VmTemplate.objects.runnable()) == []
    flags = {t.name: t.runnable for t in VmTemplate.objects.with_runnable()}
    assert flags == {"tt/busybox": False, CONTAINER: False, "tt/firecracker-only": False, "tt/retired": False}


def test_it_offers_a_template_of_several_engines_while_one_of_them_runs(node, template, docker_node):
    both = VmTemplate.objects.create(name="tt/both", path="x", compatible_engines=["firecracker", "docker"])
    assert names(VmTemplate.objects.runnable()) == ["tt/both", "tt/busybox"]
    assert both.engine_labels(frozenset({"libvirt", "docker"})) == ["Docker"]
    assert both.engine_labels(frozenset({"libvirt", "docker"}), in_service=False) == ["Firecracker"]


def test_it_finds_runnable_templates_in_a_constant_number_of_queries(node, template, container, idle):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            list(VmTemplate.objects.runnable())
            list(VmTemplate.objects.with_runnable())
        return len(captured)

    few = queries()
    for i in range(5):
        Node.objects.create(name=f"dock-{i}", kind="docker", uri=f"unix:///d{i}.sock",
                            public_host="203.0.113.20", vm_network=f"10.{110 + i}.0.0/16")
        VmTemplate.objects.create(name=f"tt/more-{i}", path="x", compatible_engines=["docker", "libvirt"])
    assert queries() == few


def test_it_lists_only_runnable_templates_to_users_in_the_api(alice, node, template, container, idle):
    listed = client_for(alice).get("/api/templates/").json()["results"]
    assert [(t["name"], t["runnable"]) for t in listed] == [("tt/busybox", True)]
    container_page = client_for(alice).get(f"/api/templates/{container.pk}/")
    assert container_page.status_code == 404


def test_it_lists_every_template_to_staff_marked_runnable_or_not(olga, node, template, container, idle,
                                                                 docker_node):
    listed = client_for(olga).get("/api/templates/").json()["results"]
    assert [(t["name"], t["runnable"]) for t in listed] == [
        ("tt/busybox", True), (CONTAINER, True), ("tt/firecracker-only", False), ("tt/retired", False)]
    one = client_for(olga).get(f"/api/templates/{idle[0].pk}/").json()
    assert (one["name"], one["runnable"]) == ("tt/firecracker-only", False)


def test_it_shows_users_the_templates_they_can_run(client, alice, node, template, container, idle,
                                                   docker_node):
    client.force_login(alice)
    response = client.get(reverse("vms:templates"))
    assert names(response.context["templates"]) == ["tt/busybox", CONTAINER]
    body = response.content.decode()
    assert "Docker" in body and "QEMU/KVM (libvirt)" in body
    assert "tt/firecracker-only" not in body and "tt/retired" not in body
    assert "Runnable" not in body


def test_it_shows_staff_every_template_and_why_it_cannot_run(client, olga, node, template, container, idle):
    client.force_login(olga)
    response = client.get(reverse("vms:templates"))
    assert names(response.context["templates"]) == ["tt/busybox", CONTAINER, "tt/firecracker-only",
                                                    "tt/retired"]
    body = response.content.decode()
    assert "Runnable" in body
    assert body.count("no: no enabled node runs its engines") == 2  # the container and firecracker ones
    assert body.count("no: disabled") == 1


def test_it_offers_runnable_templates_in_the_create_form_labelled_with_their_engines(
        client, alice, node, template, container, idle, docker_node):
    VmTemplate.objects.filter(pk=template.pk).update(default_ports=["22"])
    client.force_login(alice)
    response = client.get(reverse("envs:create"))
    field = response.context["formset"].forms[0].fields["template"]
    assert [label for _, label in field.choices] == [
        "---------", "tt/busybox (QEMU/KVM (libvirt))", f"{CONTAINER} (Docker)"]
    body = response.content.decode()
    assert f'data-ports="80">{CONTAINER} (Docker)</option>' in body
    assert 'data-ports="22">tt/busybox (QEMU/KVM (libvirt))</option>' in body
    assert names(response.context["templates"]) == ["tt/busybox", CONTAINER]
    assert "tt/firecracker-only" not in body and "tt/retired" not in body


def test_it_offers_runnable_templates_in_the_add_vm_form(client, alice, make_env, container, idle):
    env = make_env(alice)
    client.force_login(alice)
    response = client.get(reverse("envs:add_vm", args=[env.pk]))
    field = response.context["form"].fields["template"]
    assert [label for _, label in field.choices] == ["---------", "tt/busybox (QEMU/KVM (libvirt))"]


def test_it_refuses_a_template_no_enabled_node_runs(alice, node, template, container, db_state):
    before = db_state()
    vm = {"name": "web", "template": CONTAINER}
    response = client_for(alice).post("/api/envs/", {"name": "demo", "vms": [vm]}, format="json")
    assert response.status_code == 422
    body = response.json()
    assert (body["code"], body["field"]) == ("invalid", "vms[0].template")
    assert "no enabled node runs an engine this template supports" in body["message"]
    assert db_state() == before


# --- which engine runs a VM -----------------------------------------------------------------


@pytest.fixture
def mixed(alice, make_env, docker_node, container) -> tuple[Vm, Vm]:
    """alice's Env with a VM on the test driver (running) and one on the docker node (creating:
    no task runs for it, so its engine is never set up)."""
    env = make_env(alice)
    op = env_create(owner=alice, by=alice, name="boxes", vms=[NewVm(name="box", template=CONTAINER)])
    return env.vms.get(), op.env.vms.get()


def test_it_says_which_engine_runs_a_vm_in_the_api(alice, mixed):
    qemu, box = mixed
    api = client_for(alice)
    assert api.get(f"/api/vms/{qemu.pk}/").json()["engine"] == "libvirt"
    assert api.get(f"/api/vms/{box.pk}/").json()["engine"] == "docker"
    listed = {v["name"]: v["engine"] for v in api.get("/api/vms/").json()["results"]}
    assert listed == {"vm0": "libvirt", "box": "docker"}


def test_it_lists_the_engines_in_the_schema(client, db):
    schema = yaml.safe_load(client.get("/api/schema/").content)
    vm = schema["components"]["schemas"]["Vm"]
    assert vm["properties"]["engine"]["readOnly"] is True
    assert "engine" in vm["required"]
    assert schema["components"]["schemas"]["EngineKindEnum"]["enum"] == list(EngineKind.values)
    template = schema["components"]["schemas"]["Template"]
    assert template["properties"]["runnable"] == {**template["properties"]["runnable"], "type": "boolean",
                                                  "readOnly": True}


def test_it_shows_the_engine_on_the_env_and_vm_pages(client, alice, mixed):
    qemu, box = mixed
    client.force_login(alice)
    response = client.get(reverse("envs:detail", args=[box.env_id]))
    assert vm_rows(response)["box"]["engine"] == "Docker"
    assert f"{CONTAINER} · Docker" in response.content.decode()
    response = client.get(reverse("envs:detail", args=[qemu.env_id]))
    assert "tt/busybox · QEMU/KVM (libvirt)" in response.content.decode()
    body = client.get(reverse("vms:detail", args=[box.pk])).content.decode()
    assert "<dt>Engine</dt><dd>Docker</dd>" in body
    body = client.get(reverse("vms:detail", args=[qemu.pk])).content.decode()
    assert "<dt>Engine</dt><dd>QEMU/KVM (libvirt)</dd>" in body


# --- a disk the engine cannot size ----------------------------------------------------------


def test_it_wants_a_disk_limit_only_for_a_disk_larger_than_the_templates(container):
    def wanted(disk_mb):
        return wanted_features("nat", rand_uuid=False, keep_image=False, disk_mb=disk_mb, template=container)

    assert Feature.DISK_LIMIT not in wanted(None)
    assert Feature.DISK_LIMIT not in wanted(CONTAINER_MB)
    assert Feature.DISK_LIMIT in wanted(CONTAINER_MB + 1)


def test_it_refuses_a_larger_disk_on_docker_through_the_api(alice, docker_node, container, db_state):
    before = db_state()
    vm = {"name": "box", "template": CONTAINER, "disk_mb": 1024}
    response = client_for(alice).post("/api/envs/", {"name": "demo", "vms": [vm]}, format="json")
    assert response.status_code == 422
    body = response.json()
    assert (body["code"], body["field"]) == ("unsupported_feature", "vms[0].disk_mb")
    assert NO_DISK in body["message"] and f"({CONTAINER_MB} MiB)" in body["message"]
    assert db_state() == before


def test_it_refuses_a_larger_disk_on_docker_when_adding_a_vm_through_the_api(alice, make_env, docker_node,
                                                                             container, db_state):
    env = make_env(alice)
    before = db_state()
    vm = {"name": "box", "template": CONTAINER, "disk_mb": CONTAINER_MB + 1}
    response = client_for(alice).post(f"/api/envs/{env.pk}/vms/", vm, format="json")
    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == ("unsupported_feature", "disk_mb")
    assert db_state() == before


@pytest.mark.parametrize("disk", [None, CONTAINER_MB])
def test_it_takes_the_default_disk_on_docker(alice, docker_node, container, disk):
    vm = {"name": "box", "template": CONTAINER, **({"disk_mb": disk} if disk else {})}
    response = client_for(alice).post("/api/envs/", {"name": "demo", "vms": [vm]}, format="json")
    assert response.status_code == 202, response.json()
    box = Vm.objects.get()
    assert (box.node, box.disk_mb, box.status) == (docker_node, CONTAINER_MB, "creating")
    assert Operation.objects.get().status == "queued"  # its task never ran: no engine was set up


def test_it_places_a_larger_disk_on_an_engine_that_can_size_it(alice, node, template, docker_node):
    both = VmTemplate.objects.create(name="tt/both", path=template.path, size_mb=20, min_mem_mb=16,
                                     compatible_engines=["libvirt", "docker"])
    env_create(owner=alice, by=alice, name="busy", vms=[NewVm(name="vm0", template=template.name)])
    # The docker node is the less loaded; only libvirt can give a disk its size. The
    # small VM could run on either, and stays with its Env on the libvirt node.
    op = env_create(owner=alice, by=alice, name="demo",
                    vms=[NewVm(name="big", template=both.name, disk_mb=64),
                         NewVm(name="small", template=both.name)])
    placed = {vm.name: vm.node.kind for vm in op.env.vms.select_related("node")}
    assert placed == {"big": "libvirt", "small": "libvirt"}
    # Alone in its Env, the small one goes to the less loaded docker node.
    op = env_create(owner=alice, by=alice, name="alone", vms=[NewVm(name="small", template=both.name)])
    assert op.env.vms.get().node.kind == "docker"


def env_form(template: VmTemplate, **fields) -> dict:
    """What the create forms (portal and admin) post for one VM of `template` asking 512 MiB of disk."""
    vm = {"name": "box", "template": str(template.pk), "cpu_num": "1", "mem_mb": "64", "disk_mb": "512",
          "ports": "", "net_kind": "nat"}
    return {"name": "demo", "lifetime_hours": "2", "idempotency_key": "", "vms-TOTAL_FORMS": "1",
            "vms-INITIAL_FORMS": "0", "vms-MIN_NUM_FORMS": "1", "vms-MAX_NUM_FORMS": "100",
            **{f"vms-0-{key}": value for key, value in vm.items()}, **fields}


def test_it_shows_a_refused_disk_beside_the_field_in_the_create_form(client, alice, docker_node, container):
    client.force_login(alice)
    data = env_form(container, name="web", idempotency_key="k1")
    response = client.post(reverse("envs:create"), data)
    assert response.status_code == 200
    errors = response.context["formset"].forms[0].errors
    assert list(errors) == ["disk_mb"] and NO_DISK in errors["disk_mb"][0]
    assert not Env.objects.exists() and not Vm.objects.exists() and not Operation.objects.exists()
    data["vms-0-disk_mb"] = ""
    response = client.post(reverse("envs:create"), data)
    assert response.status_code == 302
    assert Vm.objects.get().node == docker_node


def test_it_shows_a_refused_disk_beside_the_field_in_the_add_vm_form(client, alice, make_env, docker_node,
                                                                    container):
    env = make_env(alice)
    client.force_login(alice)
    data = {"name": "box", "template": str(container.pk), "cpu_num": "1", "mem_mb": "64", "disk_mb": "512",
            "ports": "", "net_kind": "nat"}
    response = client.post(reverse("envs:add_vm", args=[env.pk]), data)
    assert response.status_code == 200
    assert NO_DISK in response.context["form"].errors["disk_mb"][0]
    assert not env.vms.filter(name="box").exists()
    assert not Operation.objects.filter(kind=VmKind.VM_ADD).exists()


def test_it_shows_a_refused_disk_beside_the_field_in_the_admin(client, alice, docker_node, container):
    make_operator(client)
    data = env_form(container, owner=str(alice.pk))
    response = client.post(reverse("admin:envs_env_add"), data)
    assert response.status_code == 200
    assert NO_DISK in response.context["formset"].forms[0].errors["disk_mb"][0]
    assert not Env.objects.exists() and not Vm.objects.exists()
