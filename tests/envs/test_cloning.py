"""Cloning an Env on libvirt's test driver: what the clones get, the disk bases they sit on and
how those are counted and removed, and the refusals (API bodies naming the field)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
import pytest

from engines.libvirt.connection import get_connection
from envs import cloning, services
from envs.models import Env
from nodes.models import Node
from operations.models import Operation
from tests.api_support import client_for
from tests.support import TEST_URI
from vms.models import DiskBase, Snapshot, Vm
from vms.new_vms import NewVm
from vms.reconcile import reconcile_node

pytestmark = pytest.mark.usefixtures("frozen_clock")


def volumes() -> set[str]:
    pool = next(p for p in get_connection(TEST_URI).listAllStoragePools() if p.name().startswith("tt-"))
    pool.refresh(0)
    return {v.name() for v in pool.listAllVolumes()}


def vm_volumes() -> set[str]:
    return {v for v in volumes() if v.startswith("tt-local-test-")}


def backing_of(path: str) -> str:
    vol = get_connection(TEST_URI).storageVolLookupByPath(path)
    found = ET.fromstring(vol.XMLDesc(0)).find("./backingStore/path")
    return found.text if found is not None else ""


def disk_of(vm: Vm) -> str:
    from engines.libvirt import xml

    # The test driver has no block layer: the definition says where the next boot writes.
    dom = get_connection(TEST_URI).lookupByName(vm.engine_name)
    return xml.disk_source(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def clone(api, env: Env, run_tasks, **body):
    with run_tasks():
        response = api.post(f"/api/envs/{env.pk}/clone/", body)
    assert response.status_code == 202, response.json()
    op = Operation.objects.get(pk=response.json()["id"])
    assert op.status == "succeeded", op.error_message
    return op, [Env.objects.get(pk=pk) for pk in op.params["envs"]]


def test_clones_get_the_shape_and_new_identities_on_the_source_disk(alice, make_env, run_tasks):
    vms = [NewVm(name="web", template="tt/busybox", ports=[80], mem_mb=128),
           NewVm(name="db", template="tt/busybox", cpu_num=2)]
    source = make_env(alice, name="src", vms=vms)
    before = {vm.name: vm.runtime_image for vm in source.vms.live()}
    op, clones = clone(client_for(alice), source, run_tasks, count=2)

    assert [e.name for e in clones] == ["src-clone-1", "src-clone-2"]
    assert all(e.owner == alice and e.status == "active" for e in clones)
    assert op.env_id == source.pk and "disk cut" in op.log
    sources = {vm.name: vm for vm in source.vms.live()}
    assert {vm.status for vm in sources.values()} == {"running"}  # the source keeps running
    seen = {vm.mac for vm in sources.values()} | {vm.ip for vm in sources.values()}
    for env in clones:
        vms = {vm.name: vm for vm in env.vms.live()}
        assert sorted(vms) == ["db", "web"]
        assert (vms["web"].mem_mb, vms["db"].cpu_num) == (128, 2)
        assert [p.inner_port for p in vms["web"].port_mappings.all()] == [80]
        for name, vm in vms.items():
            src = sources[name]
            assert vm.status == "running" and vm.clone_of_id == src.pk
            assert vm.mac not in seen and vm.ip not in seen and vm.uuid != src.uuid
            seen |= {vm.mac, vm.ip}
            # The clone's disk sits on what the source's disk was; the source writes anew on it too.
            assert vm.disk_base == src.disk_base and vm.disk_base.path == before[name]
            assert backing_of(vm.runtime_image) == before[name] == backing_of(src.runtime_image)
            assert disk_of(src) == src.runtime_image
            assert src.runtime_image.endswith(".g1.qcow2")
            assert vm.to_spec().machine_id == vm.uuid.replace("-", "")
            assert src.to_spec().machine_id == ""
    assert DiskBase.objects.count() == 2


def test_the_kernel_of_a_clone_takes_its_own_machine_id(alice, make_env, run_tasks):
    from engines.libvirt import xml

    source = make_env(alice, name="src")
    _, [env] = clone(client_for(alice), source, run_tasks)
    vm = env.vms.get()
    template = vm.template.to_spec()
    spec = vm.to_spec().replace(template=type(template)(**{**template.__dict__, "kernel": "vmlinuz"}))
    assert f"systemd.machine_id={vm.uuid.replace('-', '')}" in xml.kernel_cmdline(spec)


def test_bases_go_with_their_last_user_source_first(alice, make_env, run_tasks):
    source = make_env(alice, name="src")
    api = client_for(alice)
    _, [first] = clone(api, source, run_tasks)
    _, [second] = clone(api, source, run_tasks)  # a second cut: a base on a base
    assert DiskBase.objects.count() == 2
    src = source.vms.get()
    assert src.runtime_image.endswith(".g2.qcow2") and src.disk_base.parent is not None
    base_volumes = {b.volume for b in DiskBase.objects.all()}
    assert base_volumes <= volumes()

    with run_tasks():
        services.env_destroy(env=source, by=alice)
    assert base_volumes <= volumes()  # the clones still read them
    with run_tasks():
        services.env_destroy(env=second, by=alice)
    # The second cut's base went with its last user; the first's stays: `first` reads it.
    assert [b.path for b in DiskBase.objects.all()] == [first.vms.get().disk_base.path]
    with run_tasks():
        services.env_destroy(env=first, by=alice)
    assert DiskBase.objects.count() == 0
    assert not vm_volumes()


def test_destroying_the_clones_first_keeps_the_source_disk(alice, make_env, run_tasks):
    source = make_env(alice, name="src")
    _, [env] = clone(client_for(alice), source, run_tasks)
    with run_tasks():
        services.env_destroy(env=env, by=alice)
    assert DiskBase.objects.count() == 1  # the source itself writes on it
    with run_tasks():
        services.env_destroy(env=source, by=alice)
    assert DiskBase.objects.count() == 0 and not vm_volumes()


def test_reconciliation_leaves_bases_alone_and_removes_unused_ones(alice, make_env, run_tasks, settings):
    settings.TT_DRIFT_GRACE = 0
    source = make_env(alice, name="src")
    _, [env] = clone(client_for(alice), source, run_tasks)
    with run_tasks():
        services.env_destroy(env=source, by=alice)
    base = DiskBase.objects.get()
    node = Node.objects.get()
    for _ in range(2):  # found, then removed after the grace: neither may touch the base
        reconcile_node(node.pk)
    assert base.volume in volumes()
    # A base whose last user went while its node could not remove it: the next pass does.
    Vm.objects.filter(env=env).update(status=Vm.Status.DESTROYED)
    reconcile_node(node.pk)
    assert not DiskBase.objects.exists() and base.volume not in volumes()


def test_a_failed_cut_leaves_nothing_behind(alice, make_env, run_tasks, monkeypatch):
    from engines.libvirt.engine import LibvirtEngine

    source = make_env(alice, name="src")
    vols = volumes()

    def broken(self, vm):
        raise libvirt.libvirtError("the disk would not cut")

    monkeypatch.setattr(LibvirtEngine, "cut_disk", broken)
    with run_tasks():
        op = cloning.env_clone(env=source, by=alice)
    op.refresh_from_db()
    assert (op.status, op.error_code) == ("failed", "snapshot_create")
    assert source.vms.get().status == "running"
    assert Env.objects.get(pk=op.params["envs"][0]).status == "destroyed"
    assert not Vm.objects.live().exclude(env=source).exists()
    assert volumes() == vols and not DiskBase.objects.exists()


def test_quotas_count_every_clone(alice, make_env, run_tasks, settings):
    source = make_env(alice, name="src")
    settings.TT_QUOTA_ENVS = 2
    response = client_for(alice).post(f"/api/envs/{source.pk}/clone/", {"count": 2})
    assert response.status_code == 403, response.json()
    assert (response.json()["code"], response.json()["quota"], response.json()["requested"]) == \
        ("quota_exceeded", "envs", 2)
    assert Env.objects.count() == 1


@pytest.mark.parametrize("body, field", [({"count": 0}, "count"), ({"count": 11}, "count"),
                                         ({"count": "two"}, "count"), ({"name": "Not A Label!"}, "name")])
def test_bad_input_names_the_field(alice, make_env, body, field):
    source = make_env(alice, name="src")
    response = client_for(alice).post(f"/api/envs/{source.pk}/clone/", body)
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("invalid", field)


def test_someone_elses_env_is_not_found(alice, bob, make_env):
    source = make_env(alice, name="src")
    response = client_for(bob).post(f"/api/envs/{source.pk}/clone/", {})
    assert response.status_code == 404


def test_a_name_taken_and_a_dead_source_are_refused(alice, make_env, run_tasks):
    source = make_env(alice, name="src")
    api = client_for(alice)
    response = api.post(f"/api/envs/{source.pk}/clone/", {"name": "src"})
    assert (response.status_code, response.json()["field"]) == (422, "name")
    with run_tasks():
        services.env_destroy(env=source, by=alice)
    response = api.post(f"/api/envs/{source.pk}/clone/", {})
    assert (response.status_code, response.json()["field"]) == (422, "id")


def test_a_source_with_snapshots_is_refused(alice, make_env):
    source = make_env(alice, name="src")
    Snapshot.objects.create(vm=source.vms.get(), name="s1", status=Snapshot.Status.READY)
    response = client_for(alice).post(f"/api/envs/{source.pk}/clone/", {})
    assert (response.status_code, response.json()["field"]) == (422, "id")
    assert "snapshots" in response.json()["message"]


def test_a_docker_env_is_refused_as_unsupported(alice, make_env):
    source = make_env(alice, name="src")
    Node.objects.update(kind="docker")
    response = client_for(alice).post(f"/api/envs/{source.pk}/clone/", {})
    assert (response.status_code, response.json()["code"]) == (422, "unsupported_feature")
    assert "clone" in response.json()["message"]


def test_the_portal_button_clones_and_says_so(alice, make_env, run_tasks, client):
    source = make_env(alice, name="src")
    client.force_login(alice)
    page = client.get(f"/envs/{source.pk}/")
    assert f'action="/envs/{source.pk}/clone/"' in page.content.decode()
    with run_tasks():
        response = client.post(f"/envs/{source.pk}/clone/", {"count": "2"}, follow=True)
    assert "Cloning src" in response.content.decode()
    assert sorted(Env.objects.live().values_list("name", flat=True)) == ["src", "src-clone-1", "src-clone-2"]
    response = client.post(f"/envs/{source.pk}/clone/", {"count": "99"}, follow=True)
    assert "count" in response.content.decode() and "between 1 and 10" in response.content.decode()


def test_the_specs_of_many_cloned_vms_take_the_same_queries_as_of_one(alice, make_env, run_tasks):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from vms.models import specs_of

    source = make_env(alice, name="src", vms=[NewVm(name="a", template="tt/busybox")])
    clone(client_for(alice), source, run_tasks, count=1)
    with CaptureQueriesContext(connection) as one:
        assert specs_of(Vm.objects.live().filter(env=source).for_specs())[0].base_image
    clone(client_for(alice), source, run_tasks, count=3)
    with CaptureQueriesContext(connection) as five:
        specs = specs_of(Vm.objects.live().exclude(disk_base=None).for_specs())
    assert len([s for s in specs if s.base_image]) == 5
    # The VMs with their relations, their ports, the Envs that reach them: whatever the count.
    assert len(five.captured_queries) == len(one.captured_queries) == 3
