"""The tenant network boundary on the real node, tried from inside real guests.

A "private network routed from the host" is a namespace on 198.19.7.0/29 (in
198.18.0.0/15, the benchmarking range the tests keep for themselves, apart from the
client's 198.18.0.0/29) with an HTTP listener: the operator's database, say. The lab has no
global address: the client namespace stands in for the Internet, allowed explicitly
(conftest's `lab_internet`), so "Internet-like egress keeps working" is checked as egress to
an allowed network, the only kind the lab has.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import sys
from pathlib import Path

import pytest
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from engines.libvirt import dhcp
from engines.libvirt.connection import get_connection
from envs.services import env_set_deny_outgoing
from nodes.registry import forget_engines, get_engine
from tests.integration import netlab
from tests.integration.conftest import public_port, run, shell
from vms.new_vms import NewVm
from vms.services import vm_add

PRIVATE = netlab.ClientNet(netns="tt-private", host_if="tt-pv-host", ns_if="tt-pv-ns", node_addr="198.19.7.1",
                           client_addrs=("198.19.7.2",), prefix=29)
LISTENER, CLIENT_LISTENER = PRIVATE.client_addrs[0], netlab.CLIENT_ADDRS[0]
FETCH = ("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {} 8080 2>/dev/null | grep -q '200 OK' "
         "&& echo REACHED || echo BLOCKED")


@pytest.fixture(scope="module")
def private_net():
    PRIVATE.create()
    private, client = netlab.ClientServer(8080, net=PRIVATE), None
    try:
        client = netlab.ClientServer(8080)
        yield
    finally:
        for server in (private, client):
            if server is not None:
                server.close()
        PRIVATE.destroy()


def allow_private_network(node, settings) -> None:
    """What an operator does: name the network in TT_VM_ALLOW_NETWORKS, restart the workers
    (the node's firewall is written again when its engine starts)."""
    settings.TT_VM_ALLOW_NETWORKS = (*settings.TT_VM_ALLOW_NETWORKS, ipaddress.ip_network(PRIVATE.network))
    forget_engines()
    get_engine(node)


def check_the_boundary(node, vm, settings) -> None:
    firewall = get_engine(node).firewall
    before = firewall.drops_per_vm()[vm.ip]["private_network"]
    assert shell(vm, FETCH.format(CLIENT_LISTENER)) == "REACHED"  # the lab's "Internet"
    assert shell(vm, FETCH.format(LISTENER)) == "BLOCKED"
    assert firewall.drops_per_vm()[vm.ip]["private_network"] > before
    assert firewall.counters()["ip: private network"] > 0
    allow_private_network(node, settings)
    assert shell(vm, FETCH.format(LISTENER)) == "REACHED"


def test_a_qemu_guest_reaches_no_private_network_but_an_allowed_one(boot_env, qnode, private_net, settings,
                                                                    client, alice, run_tasks):
    env = boot_env()
    vm = env.vms.get()
    netlab.wait_for_shell(qnode.public_host, public_port(vm, 23))
    check_the_boundary(qnode, vm, settings)
    # Counted per VM where an operator and the owner look.
    counted = get_engine(qnode).firewall.drops_per_vm()[vm.ip]["private_network"]
    client.force_login(alice)
    metrics = client.get("/metrics").content.decode()
    blocked = {tuple(sorted(s.labels.items())): s.value
               for family in text_string_to_metric_families(metrics) for s in family.samples
               if s.name == "tt_vm_blocked_packets_total"}
    assert blocked[(("node", qnode.name), ("reason", "private_network"), ("vm", str(vm.pk)))] >= counted > 0
    page = client.get(reverse("vms:detail", args=[vm.pk])).content.decode()
    assert re.search(r"blacklisted, [1-9]\d* to private networks", page)

    # Its own name resolves through the node's resolver, answered locally (nothing upstream) ...
    lookup = (f"nslookup {vm.engine_name} {qnode.gateway_ip} 2>&1 | grep -q {vm.ip} "
              "&& echo ANSWERED || echo NONE")
    assert shell(vm, lookup) == "ANSWERED"
    # ... and nothing does once its Env denies outgoing traffic: the resolver is not asked at all.
    run(env_set_deny_outgoing, run_tasks, env=env, deny=True, by=alice)
    assert shell(vm, f"timeout 4 {lookup}").splitlines()[-1] == "NONE"  # after the shell's "Terminated"
    assert get_engine(qnode).firewall.counters()["ip: DNS of a VM denied outgoing"] > 0


def test_a_container_reaches_no_private_network_but_an_allowed_one(boot_containers, dnode, private_net,
                                                                   settings):
    env = boot_containers()
    vm = env.vms.get()
    netlab.wait_for_shell(dnode.public_host, public_port(vm, 23))
    check_the_boundary(dnode, vm, settings)


def forged_dhcp_is_dropped_and_the_victim_keeps_its_address(env, attacker, key, by, run_tasks) -> None:
    """Called from tests/integration/test_debian.py with its running Debian VM as the attacker
    (python3, root through sudo): one Debian boot under TCG is the dearest thing in the suite.
    The victim is a busybox VM added to the same Env, on the same node and DHCP server."""
    node = attacker.node
    run(vm_add, run_tasks, env=env, spec=NewVm(name="victim", template="tt/busybox", mem_mb=128,
                                                ports=[80, 23]), by=by)
    victim = env.vms.get(name="victim")
    netlab.wait_for_shell(node.public_host, public_port(victim, 23))
    firewall = get_engine(node).firewall
    counters, spoofed = firewall.counters(), firewall.spoof_drops()[attacker.to_spec().tap]

    script = base64.b64encode((Path(__file__).parent / "dhcp_forge.py").read_bytes()).decode()
    iface = f"$(ip -o -4 addr show | awk '$4 ~ /^{attacker.ip}\\// {{print $2}}')"
    forged = netlab.client_ssh(
        node.public_host, public_port(attacker, 22), key,
        f"echo {script} | base64 -d > /tmp/forge.py && sudo python3 /tmp/forge.py {iface} {attacker.ip} "
        f"{attacker.mac} {node.gateway_ip} {victim.mac} {victim.ip}")
    assert forged.stdout.strip() == "SENT 4", forged.stderr

    after = firewall.counters()
    assert after["bridge: DHCP for another MAC"] - counters["bridge: DHCP for another MAC"] == 3
    assert after["bridge: DHCP server on a VM port"] - counters["bridge: DHCP server on a VM port"] == 1
    assert firewall.spoof_drops()[attacker.to_spec().tap] - spoofed >= 4  # counted against its port
    # The victim renews: the node's DHCP still gives it its address (dnsmasq stops offering
    # an address declined to it for a while).
    renewed = shell(victim, f"udhcpc -i eth0 -s /etc/udhcpc.script -q -n -t 3 -T 2 -r {victim.ip} 2>&1")
    assert f"lease of {victim.ip} obtained" in renewed, renewed
    assert f"inet {victim.ip}/" in shell(victim, "ip -4 addr show eth0")


def test_the_nodes_dhcp_answers_no_mac_it_has_no_entry_for(qnode):
    """A client on the node's bridge that is not one of its VM ports (the bridge table lets
    it through untouched), so only dnsmasq decides: no offer for an unknown MAC, an offer once
    the MAC has a host entry (the probe works)."""
    netns, host_if, ns_if, mac = "tt-dhcpprobe", "tt-dp-host", "tt-dp-ns", "52:54:00:7e:57:01"
    inside = ("ip", "netns", "exec", netns)
    netlab.sh("ip", "netns", "del", netns, check=False)
    netlab.sh("ip", "link", "del", host_if, check=False)
    net = get_connection(qnode.uri).networkLookupByName(qnode.network_name)
    try:
        netlab.sh("ip", "netns", "add", netns)
        netlab.sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        netlab.sh("ip", "link", "set", ns_if, "netns", netns)
        netlab.sh("ip", "link", "set", host_if, "master", qnode.bridge, "up")
        netlab.sh(*inside, "ip", "link", "set", ns_if, "address", mac, "up")

        def ask() -> str:
            return netlab.sh(*inside, sys.executable, str(Path(__file__).parent / "dhcp_forge.py"), "probe",
                             ns_if, mac).stdout.strip()

        assert ask() == "NONE"
        dhcp.put(net, mac, qnode.ip_for_index(0x7E5701 & 0xFFFF), "tt-dhcp-probe")
        assert ask() == "OFFER"
    finally:
        dhcp.drop(net, mac)
        netlab.sh("ip", "netns", "del", netns, check=False)
        netlab.sh("ip", "link", "del", host_if, check=False)
