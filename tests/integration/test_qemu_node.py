"""What a user of a real node checks: guests boot, are reachable, are cut off when
asked, come back from snapshots, and leave nothing behind."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET

import libvirt
import pytest
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from engines.libvirt.connection import get_connection
from engines.specs import tap_name
from envs.services import env_destroy, env_set_deny_outgoing
from nodes.registry import get_engine
from tests.integration import netlab
from tests.integration.conftest import public_port, run, shell
from vms.models import Vm
from vms.services import (
    snapshot_apply,
    snapshot_create,
    vm_destroy,
    vm_set_blacklist,
    vm_start,
    vm_stop,
    vm_suspend,
)


def domain(vm: Vm):
    return get_connection(vm.node.uri).lookupByName(vm.engine_name)



def test_it_boots_two_vms_each_reachable_on_its_own_forwarded_port(boot_env, qnode, client, alice):
    env = boot_env(vms=("web", "db"))
    web, db = env.vms.get(name="web"), env.vms.get(name="db")
    assert public_port(web, 80) != public_port(db, 80)
    # From the client's own namespace, each public port reaches its own VM.
    for vm in (web, db):
        page = netlab.client_get(f"http://{qnode.public_host}:{public_port(vm, 80)}/")
        assert vm.engine_name in page and vm.ip in page
    # From the node itself too, at its public address and at the loopback address.
    for host in (qnode.public_host, "127.0.0.1"):
        page = urllib.request.urlopen(f"http://{host}:{public_port(web, 80)}/", timeout=5).read().decode()
        assert web.ip in page
    # The guest got the address its MAC implies.
    assert qnode.ip_for_mac(web.mac) == web.ip
    # The runtime image is a copy-on-write overlay whose backing file is the template.
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--force-share", "--output=json", web.runtime_image],
        capture_output=True, text=True, check=True,
    ).stdout)
    template_path = get_connection(qnode.uri).storagePoolLookupByName(qnode.pool_name) \
        .storageVolLookupByName(web.template.path).path()
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == template_path
    # The VM's page shows the guest's serial console, with the ready line it printed.
    client.force_login(alice)
    page = client.get(reverse("vms:detail", args=[web.pk])).content.decode()
    assert f"TT-READY name={web.engine_name} ip={web.ip}" in page


def test_it_cuts_egress_and_blacklists_single_addresses(boot_env, qnode, run_tasks, alice, client):
    server = netlab.ClientServer(8080)
    try:
        env = boot_env()
        vm = env.vms.get()
        netlab.wait_for_shell(qnode.public_host, public_port(vm, 23))
        # busybox nc, not wget: the static busybox's wget crashes in glibc's NSS.
        fetch = (
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {} 8080 2>/dev/null | grep -q '200 OK' "
            "&& echo REACHED || echo BLOCKED"
        )
        a, b = netlab.CLIENT_ADDRS
        assert shell(vm, fetch.format(a)) == "REACHED"

        run(env_set_deny_outgoing, run_tasks, env=env, deny=True, by=alice)
        assert shell(vm, fetch.format(a)) == "BLOCKED"
        # Inbound forwarding still works while egress is denied.
        assert netlab.client_get(f"http://{qnode.public_host}:{public_port(vm, 80)}/") is not None
        assert get_engine(qnode).firewall.counters()["ip: egress denied"] > 0
        # Counted per VM too: what /metrics and the VM page show as its blocked attempts.
        assert get_engine(qnode).firewall.drops_per_vm()[vm.ip]["egress_denied"] > 0
        client.force_login(alice)
        metrics = client.get("/metrics").content.decode()
        blocked = {tuple(sorted(s.labels.items())): s.value
                   for family in text_string_to_metric_families(metrics) for s in family.samples
                   if s.name == "tt_vm_blocked_packets_total"}
        assert blocked[(("node", qnode.name), ("reason", "egress_denied"), ("vm", str(vm.pk)))] > 0
        page = client.get(reverse("vms:detail", args=[vm.pk])).content.decode()
        assert re.search(r"Blocked: [1-9]\d* outgoing", page)

        run(env_set_deny_outgoing, run_tasks, env=env, deny=False, by=alice)
        assert shell(vm, fetch.format(a)) == "REACHED"

        run(vm_set_blacklist, run_tasks, vm=vm, addresses=[a], by=alice)
        assert shell(vm, fetch.format(a)) == "BLOCKED"
        assert shell(vm, fetch.format(b)) == "REACHED"
        assert get_engine(qnode).firewall.counters()["ip: blacklisted"] > 0
        assert get_engine(qnode).firewall.drops_per_vm()[vm.ip]["blacklisted"] > 0

        run(vm_set_blacklist, run_tasks, vm=vm, addresses=[], by=alice)
        assert shell(vm, fetch.format(a)) == "REACHED"
    finally:
        server.close()


def test_it_brings_back_what_a_snapshot_held(boot_env, qnode, run_tasks, alice):
    env = boot_env()
    vm = env.vms.get()
    url = f"http://{qnode.public_host}:{public_port(vm, 80)}/marker"
    netlab.wait_for_shell(qnode.public_host, public_port(vm, 23))
    shell(vm, "echo before-snapshot > /www/marker; sync")
    assert netlab.client_get(url) == "before-snapshot\n"

    op = run(snapshot_create, run_tasks, vm=vm, name="clean", by=alice)
    vm.refresh_from_db()
    assert vm.status == "running"  # the power state it had
    netlab.wait_for_shell(qnode.public_host, public_port(vm, 23))
    shell(vm, "echo after-snapshot > /www/marker; sync")
    assert netlab.client_get(url) == "after-snapshot\n"

    run(snapshot_apply, run_tasks, snapshot=op.snapshot, by=alice)
    netlab.wait_for_http(url, expect="before-snapshot")
    assert "clean" in domain(vm).snapshotListNames()


def test_it_stops_and_starts_with_the_same_address_and_ports(boot_env, qnode, run_tasks, alice):
    env = boot_env()
    vm = env.vms.get()
    ip, ports = vm.ip, sorted(vm.port_mappings.values_list("inner_port", "public_port"))

    run(vm_stop, run_tasks, vm=vm, by=alice)
    vm.refresh_from_db()
    assert vm.status == "stopped"
    assert domain(vm).state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert netlab.client_get(f"http://{qnode.public_host}:{public_port(vm, 80)}/", timeout=2) is None

    run(vm_start, run_tasks, vm=vm, by=alice)
    vm.refresh_from_db()
    assert vm.status == "running"
    assert (vm.ip, sorted(vm.port_mappings.values_list("inner_port", "public_port"))) == (ip, ports)
    netlab.wait_for_http(f"http://{qnode.public_host}:{public_port(vm, 80)}/", expect=ip)


def test_suspend_keeps_memory_and_resume_brings_it_back(boot_env, qnode, run_tasks, alice):
    env = boot_env()
    vm = env.vms.get()
    netlab.wait_for_shell(qnode.public_host, public_port(vm, 23))
    # /tmp is a tmpfs here: the file lives in the guest's memory alone.
    shell(vm, "mount -t tmpfs tmpfs /tmp && echo held-in-memory > /tmp/marker && cat /proc/uptime")
    run(vm_suspend, run_tasks, vm=vm, by=alice)
    vm.refresh_from_db()
    dom = domain(vm)
    assert vm.status == "suspended" and not dom.isActive() and dom.hasManagedSaveImage(0)
    assert netlab.client_get(f"http://{qnode.public_host}:{public_port(vm, 80)}/", timeout=2) is None

    # A snapshot of the suspended VM is of its disk; it stays suspended.
    snap = run(snapshot_create, run_tasks, vm=vm, name="while-suspended", by=alice).snapshot
    vm.refresh_from_db()
    assert vm.status == "suspended" and dom.hasManagedSaveImage(0)

    started = time.monotonic()
    op = run(vm_start, run_tasks, vm=vm, by=alice)
    netlab.wait_for_http(f"http://{qnode.public_host}:{public_port(vm, 80)}/", expect=vm.ip)
    print(f"resume: HTTP again {time.monotonic() - started:.2f} s after the start request")
    assert "resumed from its saved memory" in op.log
    netlab.wait_for_shell(qnode.public_host, public_port(vm, 23))
    assert shell(vm, "cat /tmp/marker").strip() == "held-in-memory"  # not a reboot: memory came back

    # Applying a snapshot to a suspended VM discards its saved memory: it ends stopped.
    run(vm_suspend, run_tasks, vm=vm, by=alice)
    run(snapshot_apply, run_tasks, snapshot=snap, by=alice)
    vm.refresh_from_db()
    assert vm.status == "stopped" and not dom.isActive() and not dom.hasManagedSaveImage(0)
    run(vm_start, run_tasks, vm=vm, by=alice)
    netlab.wait_for_shell(qnode.public_host, public_port(vm, 23))
    assert shell(vm, "cat /tmp/marker 2>/dev/null || echo gone").strip() == "gone"  # booted afresh


@pytest.mark.parametrize("keep_image", [False, True])
def test_it_leaves_nothing_behind_on_destroy(boot_env, qnode, run_tasks, alice, keep_image):
    env = boot_env()
    vm = env.vms.get()
    Vm.objects.filter(pk=vm.pk).update(keep_image=keep_image)
    ip, name = vm.ip, vm.engine_name
    conn = get_connection(qnode.uri)

    run(env_destroy, run_tasks, env=env, by=alice)
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName(name)
    pool = conn.storagePoolLookupByName(qnode.pool_name)
    pool.refresh(0)
    assert (f"{name}.qcow2" in pool.listVolumes()) is keep_image
    assert get_engine(qnode).firewall.installed({ip, tap_name(name)}) == []
    net_xml = conn.networkLookupByName(qnode.network_name).XMLDesc(0)
    assert ip not in net_xml


def test_it_destroys_one_vm_and_keeps_the_others_wired(boot_env, qnode, run_tasks, alice):
    env = boot_env(vms=("a", "b"))
    a, b = env.vms.get(name="a"), env.vms.get(name="b")
    run(vm_destroy, run_tasks, vm=a, by=alice)
    assert get_engine(qnode).firewall.installed({a.ip, tap_name(a.engine_name)}) == []
    assert netlab.client_get(f"http://{qnode.public_host}:{public_port(b, 80)}/") is not None


def test_it_forwards_udp_too(boot_env, qnode):
    env = boot_env(ports=(80, 23, "5353/udp"))
    vm = env.vms.get()
    netlab.wait_for_shell(qnode.public_host, public_port(vm, 23))

    def udp_no_ports() -> int:
        # The busybox guest has no UDP server; a datagram for a closed port
        # still shows up in its kernel's counter, which proves it arrived.
        header, values = [ln.split() for ln in shell(vm, "grep '^Udp:' /proc/net/snmp").splitlines()][:2]
        return int(values[header.index("NoPorts")])

    before = udp_no_ports()
    for _ in range(5):
        netlab.client_send_udp(qnode.public_host, public_port(vm, 5353, "udp"), b"hello-over-udp")
    time.sleep(1)
    assert udp_no_ports() - before >= 5


def test_it_puts_the_dhcp_entry_in_both_definitions_whatever_each_holds(qnode):
    # A step cut short can leave libvirt's live and persistent definitions apart, or an
    # entry of this name with an older MAC; libvirt refuses an add that either one
    # contradicts. The engine mends each definition on its own.
    net = get_connection(qnode.uri).networkLookupByName(qnode.network_name)
    mac, ip, name = "52:54:00:00:77:01", "10.101.119.1", "tt-itest-dhcp"
    stale = f"<host mac='52:54:00:00:77:02' name='{name}' ip='10.101.119.2'/>"
    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
               stale, libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)  # in the persistent one only
    engine = get_engine(qnode)

    engine.set_reservation(mac, ip, name, present=True)
    for flags in (0, libvirt.VIR_NETWORK_XML_INACTIVE):
        hosts = ET.fromstring(net.XMLDesc(flags)).iterfind("./ip/dhcp/host")
        assert [(h.get("mac"), h.get("ip"), h.get("name")) for h in hosts] == [(mac, ip, name)]
    assert engine.inventory("tt-itest-").reservations == {mac: ip}

    engine.set_reservation(mac, ip, name, present=False)
    assert engine.inventory("tt-itest-").reservations == {}
