"""What a user of a docker node checks: the same scenarios as on a QEMU node, with
containers (podman's Docker API, runc, the node's own nftables table)."""

from __future__ import annotations

import docker
import pytest
from django.urls import reverse

from engines.specs import tap_name
from envs.models import Env
from envs.services import env_create, env_destroy, env_set_deny_outgoing
from nodes.registry import get_engine
from tests.integration import netlab
from tests.integration.conftest import DOCKER_NODE, public_port, run, shell
from vms.models import Vm
from vms.new_vms import NewVm
from vms.services import (
    snapshot_apply,
    snapshot_create,
    snapshot_destroy,
    vm_set_blacklist,
    vm_start,
    vm_stop,
)


def client() -> docker.DockerClient:
    return docker.DockerClient(base_url=DOCKER_NODE["uri"], version="1.41")


def container(vm: Vm):
    return client().containers.get(vm.engine_name)


def test_it_serves_each_container_on_its_own_forwarded_port(boot_containers, dnode, client, alice):
    env = boot_containers(vms=("web", "db"))
    web, db = env.vms.get(name="web"), env.vms.get(name="db")
    assert public_port(web, 80) != public_port(db, 80)
    for vm in (web, db):
        page = netlab.client_get(f"http://{dnode.public_host}:{public_port(vm, 80)}/")
        assert vm.engine_name in page and vm.ip in page
        # The address and MAC the VM row says, set through the network's endpoint config.
        settings = container(vm).attrs["NetworkSettings"]["Networks"][dnode.network_name]
        assert (settings["IPAddress"], settings["MacAddress"]) == (vm.ip, vm.mac)
        assert dnode.ip_for_mac(vm.mac) == vm.ip
    # Limits from the VM row; the writable layer is the runtime image, a reference.
    host = container(web).attrs["HostConfig"]
    assert host["Memory"] == web.mem_mb * 1024 * 1024
    assert host["CpuQuota"] == 100_000 * web.cpu_num
    assert web.runtime_image == f"container:{web.engine_name}"
    # Its own machine-id (rand_uuid), and the VM page shows its log as the console.
    assert shell(web, "cat /etc/machine-id") == web.uuid.replace("-", "")
    client.force_login(alice)
    page = client.get(reverse("vms:detail", args=[web.pk])).content.decode()
    assert f"TT-READY name={web.engine_name} ip={web.ip}" in page


def test_it_cuts_egress_and_blacklists_single_addresses(boot_containers, dnode, run_tasks, alice):
    server = netlab.ClientServer(8080)
    try:
        env = boot_containers()
        vm = env.vms.get()
        netlab.wait_for_shell(dnode.public_host, public_port(vm, 23))
        fetch = ("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {} 8080 2>/dev/null | grep -q '200 OK' "
                 "&& echo REACHED || echo BLOCKED")
        a, b = netlab.CLIENT_ADDRS
        assert shell(vm, fetch.format(a)) == "REACHED"
        run(env_set_deny_outgoing, run_tasks, env=env, deny=True, by=alice)
        assert shell(vm, fetch.format(a)) == "BLOCKED"
        assert get_engine(dnode).firewall.counters()["ip: egress denied"] > 0
        assert get_engine(dnode).firewall.drops_per_vm()[vm.ip]["egress_denied"] > 0
        run(env_set_deny_outgoing, run_tasks, env=env, deny=False, by=alice)
        assert shell(vm, fetch.format(a)) == "REACHED"
        run(vm_set_blacklist, run_tasks, vm=vm, addresses=[a], by=alice)
        assert shell(vm, fetch.format(a)) == "BLOCKED"
        assert shell(vm, fetch.format(b)) == "REACHED"
    finally:
        server.close()


def test_a_snapshot_brings_back_the_container_as_it_was(boot_containers, dnode, run_tasks, alice):
    env = boot_containers()
    vm = env.vms.get()
    url = f"http://{dnode.public_host}:{public_port(vm, 80)}/marker"
    netlab.wait_for_shell(dnode.public_host, public_port(vm, 23))
    shell(vm, "echo before-snapshot > /www/marker")
    op = run(snapshot_create, run_tasks, vm=vm, name="clean", by=alice)
    snapshot = op.snapshot
    assert snapshot.path == f"tt/vm-{vm.pk}:snap-clean"
    netlab.wait_for_shell(dnode.public_host, public_port(vm, 23))
    shell(vm, "echo after-snapshot > /www/marker")
    assert netlab.client_get(url) == "after-snapshot\n"

    run(snapshot_apply, run_tasks, snapshot=snapshot, by=alice)
    netlab.wait_for_http(url, expect="before-snapshot")
    vm.refresh_from_db()
    assert vm.status == "running"
    settings = container(vm).attrs["NetworkSettings"]["Networks"][dnode.network_name]
    assert (settings["IPAddress"], settings["MacAddress"]) == (vm.ip, vm.mac)
    # The snapshot's tag goes with it; the container made from it keeps running.
    run(snapshot_destroy, run_tasks, snapshot=snapshot, by=alice)
    assert not [t for i in client().images.list() for t in i.tags if t.endswith(f"tt/vm-{vm.pk}:snap-clean")]
    assert netlab.client_get(url) == "before-snapshot\n"


def test_it_stops_and_starts_with_the_same_address_and_ports(boot_containers, dnode, run_tasks, alice):
    env = boot_containers()
    vm = env.vms.get()
    ports = sorted(vm.port_mappings.values_list("inner_port", "public_port"))
    op = run(vm_stop, run_tasks, vm=vm, by=alice)
    assert "SIGTERM" in op.log
    assert container(vm).status == "exited"
    assert netlab.client_get(f"http://{dnode.public_host}:{public_port(vm, 80)}/", timeout=2) is None
    run(vm_start, run_tasks, vm=vm, by=alice)
    vm.refresh_from_db()
    assert sorted(vm.port_mappings.values_list("inner_port", "public_port")) == ports
    netlab.wait_for_http(f"http://{dnode.public_host}:{public_port(vm, 80)}/", expect=vm.ip)


@pytest.mark.parametrize("keep_image", [False, True])
def test_destroy_leaves_nothing_behind(boot_containers, dnode, run_tasks, alice, keep_image):
    env = boot_containers()
    vm = env.vms.get()
    Vm.objects.filter(pk=vm.pk).update(keep_image=keep_image)
    run(snapshot_create, run_tasks, vm=vm, name="s1", by=alice)
    ip, name = vm.ip, vm.engine_name

    run(env_destroy, run_tasks, env=env, by=alice)
    assert name not in [c.name for c in client().containers.list(all=True)]
    tags = [t for i in client().images.list() for t in i.tags if f"tt/vm-{vm.pk}:" in t]
    assert tags == ([f"docker.io/tt/vm-{vm.pk}:kept"] if keep_image else [])
    assert get_engine(dnode).firewall.installed({ip, tap_name(name)}) == []
    assert ip not in str(client().networks.get(dnode.network_name).attrs.get("Containers"))
    for tag in tags:
        client().images.remove(tag)


def test_containers_of_other_envs_are_isolated(boot_containers, dnode, alice, bob, run_tasks):
    mine = boot_containers(name="mine", vms=("a1", "a2"))
    a1, a2 = mine.vms.get(name="a1"), mine.vms.get(name="a2")
    with run_tasks():
        op = env_create(owner=bob, by=bob, name="bobs",
                        vms=[NewVm(name="b1", template="tt/busybox-container", mem_mb=32, ports=[80])])
    op.refresh_from_db()
    b1 = Env.objects.get(pk=op.env_id).vms.get()
    netlab.wait_for_http(f"http://{dnode.public_host}:{public_port(b1, 80)}/", expect=b1.ip)
    netlab.wait_for_shell(dnode.public_host, public_port(a1, 23))
    probe = "nc -w 2 {} 80 </dev/null >/dev/null 2>&1 && echo REACHED || echo BLOCKED"
    assert shell(a1, probe.format(a2.ip)) == "REACHED"
    assert shell(a1, probe.format(b1.ip)) == "BLOCKED"
    # The host answers containers only DHCP and DNS, as it answers VMs.
    host_probe = f"nc -w 2 {dnode.gateway_ip} 22 </dev/null >/dev/null 2>&1 && echo OPEN || echo SHUT"
    assert shell(a1, host_probe) == "SHUT"


def test_one_env_holds_a_qemu_vm_and_a_container_side_by_side(qnode, dnode, alice, run_tasks):
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="mixed", vms=[
            NewVm(name="vm", template="tt/busybox", mem_mb=128, ports=[80]),
            NewVm(name="box", template="tt/busybox-container", mem_mb=32, ports=[80]),
        ])
    op.refresh_from_db()
    assert op.status == "succeeded", f"{op.error_code}: {op.error_message}\n{op.log}"
    env = Env.objects.get(pk=op.env_id)
    vm, box = env.vms.get(name="vm"), env.vms.get(name="box")
    assert (vm.node, box.node) == (qnode, dnode)
    for one in (vm, box):
        netlab.wait_for_http(f"http://{one.node.public_host}:{public_port(one, 80)}/", expect=one.ip)


def test_a_flat_container_is_reached_at_its_own_address(dnode, alice, run_tasks):
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="flat", vms=[
            NewVm(name="flat", template="tt/busybox-container", mem_mb=32, net_kind="flat"),
            NewVm(name="peer", template="tt/busybox-container", mem_mb=32, ports=[23]),
        ])
    op.refresh_from_db()
    assert op.status == "succeeded", f"{op.error_code}: {op.error_message}\n{op.log}"
    env = Env.objects.get(pk=op.env_id)
    flat, peer = env.vms.get(name="flat"), env.vms.get(name="peer")
    assert not flat.port_mappings.exists()
    # From the node (its routable address) and from a container of its own Env.
    page = netlab.wait_for_http(f"http://{flat.ip}/", expect=flat.ip)
    assert flat.engine_name in page
    netlab.wait_for_shell(dnode.public_host, public_port(peer, 23))
    assert shell(peer, f"nc -w 2 {flat.ip} 80 </dev/null >/dev/null 2>&1 && echo REACHED || echo BLOCKED") \
        == "REACHED"


def test_a_snapshot_another_container_uses_is_refused_with_a_clear_error(boot_containers, dnode, run_tasks,
                                                                           alice):
    env = boot_containers(ports=(80,))
    vm = env.vms.get()
    snapshot = run(snapshot_create, run_tasks, vm=vm, name="base", by=alice).snapshot
    other = client().containers.create(snapshot.path, name="tt-test-user-of-snapshot")
    try:
        with run_tasks():
            op = snapshot_destroy(snapshot=snapshot, by=alice)
        op.refresh_from_db()
        assert (op.status, op.error_code) == ("failed", "snapshot_destroy")
        assert "tt-test-user-of-snapshot" in op.error_message
        assert client().images.get(snapshot.path)  # still there
    finally:
        other.remove(force=True)
    run(snapshot_destroy, run_tasks, snapshot=snapshot, by=alice)
