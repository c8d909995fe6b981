"""The VM, snapshot and template endpoints: happy paths, refusals, filters, and a
constant number of queries per list whatever the number of VMs."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from operations.models import Operation
from tests.api_support import client_for
from tests.support import domain_state, libvirt_snapshots, take_snapshot
from vms.models import PortMapping, Snapshot, Vm, VmTemplate

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def vm(alice, make_env) -> Vm:
    env = make_env(alice, vms=[_new_vm("vm0", ports=[22])])
    return env.vms.get()


def _new_vm(name, **kwargs):
    from vms.new_vms import NewVm

    return NewVm(name=name, template="tt/busybox", **kwargs)


def test_it_shows_a_vm_with_its_ports(alice, vm, node):
    body = client_for(alice).get(f"/api/vms/{vm.pk}/").json()
    assert (body["name"], body["status"], body["env"], body["node"], body["template"]) == (
        "vm0", "running", vm.env_id, node.name, "tt/busybox")
    assert body["ip"] == vm.ip and body["addr"] == node.public_host
    (port,) = body["ports"]
    public = PortMapping.objects.get(vm=vm).public_port
    assert port == {"protocol": "tcp", "inner_port": 22, "public_port": public,
                    "endpoint": f"{node.public_host}:{public}"}


def test_it_stops_and_starts_a_vm(alice, vm, run_tasks):
    api = client_for(alice)
    with run_tasks():
        response = api.post(f"/api/vms/{vm.pk}/stop/")
    assert (response.status_code, response.json()["kind"]) == (202, "vm_stop")
    assert domain_state(vm) == "stopped"
    assert api.get(f"/api/vms/{vm.pk}/").json()["status"] == "stopped"
    with run_tasks():
        assert api.post(f"/api/vms/{vm.pk}/start/").status_code == 202
    assert domain_state(vm) == "running"


def test_it_answers_starting_a_running_vm_with_its_state_and_records_nothing(alice, vm, db_state):
    before = db_state()
    response = client_for(alice).post(f"/api/vms/{vm.pk}/start/")
    assert response.status_code == 200
    assert (response.json()["id"], response.json()["status"]) == (vm.pk, "running")
    assert db_state() == before


def test_it_destroys_a_vm(alice, vm, run_tasks):
    with run_tasks():
        assert client_for(alice).post(f"/api/vms/{vm.pk}/destroy/").status_code == 202
    vm.refresh_from_db()
    assert (vm.status, domain_state(vm)) == ("destroyed", "missing")
    assert not vm.port_mappings.exists()


@pytest.mark.parametrize("method", ["put", "post"])
def test_it_sets_the_blacklist(alice, vm, run_tasks, firewall, method):
    with run_tasks():
        response = getattr(client_for(alice), method)(
            f"/api/vms/{vm.pk}/blacklist/", {"addresses": ["192.0.2.1", "198.51.100.7"]})
    assert response.status_code == 202
    assert Operation.objects.get(pk=response.json()["id"]).status == "succeeded"
    vm.refresh_from_db()
    assert vm.net_blacklist == ["192.0.2.1", "198.51.100.7"]
    assert firewall.blacklist == {(vm.ip, "192.0.2.1"), (vm.ip, "198.51.100.7")}


@pytest.mark.parametrize(("body", "field"), [
    ({"addresses": ["192.0.2.1", "not-an-ip"]}, "addresses[1]"),
    ({"addresses": "192.0.2.1"}, "addresses"),
    ({}, "addresses"),
])
def test_it_refuses_a_bad_blacklist(alice, vm, db_state, body, field):
    before = db_state()
    response = client_for(alice).put(f"/api/vms/{vm.pk}/blacklist/", body)
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("invalid", field)
    assert db_state() == before


@pytest.mark.parametrize("method", ["put", "post"])
def test_it_sets_the_ports(alice, vm, run_tasks, firewall, method):
    kept = PortMapping.objects.get(vm=vm).public_port
    with run_tasks():
        response = getattr(client_for(alice), method)(f"/api/vms/{vm.pk}/ports/", {"ports": [22, "53/udp"]})
    assert response.status_code == 202
    ports = {(p.protocol, p.inner_port): p.public_port for p in vm.port_mappings.all()}
    assert set(ports) == {("tcp", 22), ("udp", 53)}
    assert ports[("tcp", 22)] == kept
    assert firewall.port_map == {(proto, public): (vm.ip, inner) for (proto, inner), public in ports.items()}


def test_it_refuses_bad_ports(alice, vm, db_state):
    before = db_state()
    response = client_for(alice).put(f"/api/vms/{vm.pk}/ports/", {"ports": [22, "80/sctp"]})
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("invalid", "ports[1]")
    assert "/udp" in response.json()["message"]
    assert db_state() == before


def test_it_snapshots_applies_and_deletes(alice, vm, run_tasks):
    api = client_for(alice)
    with run_tasks():
        response = api.post(f"/api/vms/{vm.pk}/snapshots/", {"name": "before", "life_time": 3600})
    assert (response.status_code, response.json()["kind"]) == (202, "snapshot_create")
    snapshot_id = response.json()["snapshot"]
    body = api.get(f"/api/snapshots/{snapshot_id}/").json()
    assert (body["name"], body["status"], body["vm"], body["life_time"]) == ("before", "ready", vm.pk, 3600)
    assert body["expires_at"] is not None
    assert libvirt_snapshots(vm) == {"before"}

    with run_tasks():
        response = api.post(f"/api/snapshots/{snapshot_id}/apply/")
    assert response.status_code == 202
    assert Operation.objects.get(pk=response.json()["id"]).status == "succeeded"

    with run_tasks():
        response = api.delete(f"/api/snapshots/{snapshot_id}/")
    assert (response.status_code, response.json()["kind"]) == (202, "snapshot_destroy")
    assert not Snapshot.objects.filter(pk=snapshot_id).exists()
    assert libvirt_snapshots(vm) == set()


def test_it_deletes_a_snapshot_by_post_too(alice, vm, run_tasks):
    snapshot = take_snapshot(vm, run_tasks)
    with run_tasks():
        response = client_for(alice).post(f"/api/snapshots/{snapshot.pk}/destroy/")
    assert response.status_code == 202
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists()


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "Bad Name"}, "name"),
    ({"name": "ok", "life_time": 5}, "life_time"),
    ({"life_time": 3600}, "name"),
])
def test_it_refuses_a_bad_snapshot(alice, vm, db_state, body, field):
    before = db_state()
    response = client_for(alice).post(f"/api/vms/{vm.pk}/snapshots/", body)
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("invalid", field)
    assert db_state() == before


def test_it_refuses_to_delete_a_snapshot_being_applied(alice, vm, run_tasks):
    snapshot = take_snapshot(vm, run_tasks)
    api = client_for(alice)
    assert api.post(f"/api/snapshots/{snapshot.pk}/apply/").status_code == 202  # its task has not run
    response = api.delete(f"/api/snapshots/{snapshot.pk}/")
    assert (response.status_code, response.json()["code"]) == (409, "illegal_state")


def test_it_returns_the_same_operation_for_the_same_idempotency_key(alice, vm):
    api = client_for(alice)
    first = api.post(f"/api/vms/{vm.pk}/stop/", HTTP_IDEMPOTENCY_KEY="vm-stop")
    again = api.post(f"/api/vms/{vm.pk}/stop/", HTTP_IDEMPOTENCY_KEY="vm-stop")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert Operation.objects.filter(kind="vm_stop").count() == 1


def test_it_filters_vms(alice, make_env, run_tasks, node):
    one = make_env(alice, name="one", vms=2)
    two = make_env(alice, name="two", vms=1)
    first = one.vms.order_by("name").first()
    with run_tasks():
        client_for(alice).post(f"/api/vms/{first.pk}/stop/")
    api = client_for(alice)

    def vms(query):
        response = api.get(f"/api/vms/?{query}")
        assert response.status_code == 200, response.json()
        return sorted((v["env_name"], v["name"]) for v in response.json()["results"])

    assert vms("") == [("one", "vm0"), ("one", "vm1"), ("two", "vm0")]
    assert vms(f"env={two.pk}") == [("two", "vm0")]
    assert vms("status=stopped") == [("one", "vm0")]
    assert vms(f"node={node.name}&status=running") == [("one", "vm1"), ("two", "vm0")]
    assert vms("node=elsewhere") == []


def test_it_filters_snapshots(alice, make_env, run_tasks):
    env = make_env(alice, vms=2)
    vm0, vm1 = env.vms.order_by("name")
    take_snapshot(vm0, run_tasks, "a")
    take_snapshot(vm1, run_tasks, "b")
    api = client_for(alice)
    assert [s["name"] for s in api.get(f"/api/snapshots/?vm={vm1.pk}").json()["results"]] == ["b"]
    assert api.get(f"/api/snapshots/?env={env.pk}").json()["count"] == 2


def test_it_shows_enabled_templates_without_node_paths(alice, olga, template):
    VmTemplate.objects.create(name="tt/old", path="old.qcow2", compatible_engines=["libvirt"], enabled=False)
    listed = client_for(alice).get("/api/templates/").json()["results"]
    assert [t["name"] for t in listed] == ["tt/busybox"]
    assert "path" not in listed[0] and "kernel" not in listed[0]
    assert listed[0]["min_mem_mb"] == template.min_mem_mb
    assert [t["name"] for t in client_for(olga).get("/api/templates/").json()["results"]] == [
        "tt/busybox", "tt/old"]


def _count_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


@pytest.mark.parametrize("url", ["/api/vms/", "/api/snapshots/", "/api/templates/", "/api/tokens/",
                                 "/api/vms/{vm}/"])
def test_it_lists_with_a_constant_number_of_queries(alice, make_env, run_tasks, url):
    api = client_for(alice)
    small = make_env(alice, name="small", vms=[_new_vm("a", ports=[22])])
    take_snapshot(small.vms.get(), run_tasks, "s")
    api.get("/api/templates/")  # the token's first use records it; later ones within a minute do not
    few = _count_queries(api, url.format(vm=small.vms.get().pk))

    big = make_env(alice, name="big", vms=[_new_vm(f"vm{i}", ports=[22, 80, "53/udp"]) for i in range(6)])
    for vm in big.vms.all():
        take_snapshot(vm, run_tasks, "s")
    client_for(alice, name="another")
    many = _count_queries(api, url.format(vm=big.vms.first().pk))

    assert many == few
