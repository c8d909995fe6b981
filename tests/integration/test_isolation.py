"""Isolation on the real node: one user's VMs cannot reach another's, the host, or another's
address; peering opens two Envs to each other, and only that. Checked from inside the
guests (their test shell), the way a user's software would try."""

from __future__ import annotations

import socket
import subprocess
import threading

import pytest

from engines.network.nftables import NftablesFirewall
from engines.specs import TemplateSpec, VmSpec, port_prefix
from envs.models import Env
from envs.peering import env_peer, env_unpeer
from envs.services import env_create
from nodes.registry import get_engine, nft_table_name
from tests.integration import netlab
from tests.integration.conftest import public_port, run, shell
from vms.models import Vm
from vms.new_vms import NewVm
from vms.reconcile import reconcile_nodes
from vms.services import vm_start, vm_stop

# busybox nc, not wget: the static busybox's wget crashes in glibc's NSS.
HTTP = ("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port} 2>/dev/null | grep -q '200 OK' "
        "&& echo REACHED || echo BLOCKED")
PING = "ping -c 2 -W 2 {ip} >/dev/null 2>&1 && echo REACHED || echo BLOCKED"




def http(src: Vm, ip: str, port: int = 80) -> str:
    return shell(src, HTTP.format(ip=ip, port=port))


def ping(src: Vm, ip: str) -> str:
    return shell(src, PING.format(ip=ip))


@pytest.fixture
def bobs_env(qnode, bob, run_tasks):
    """Bob's Env: a NAT VM with a test shell, and a FLAT VM (reached only at its address)."""
    specs = [NewVm(name="srv", template="tt/busybox", mem_mb=128, ports=[80, 23]),
             NewVm(name="flat", template="tt/busybox", mem_mb=128, net_kind="flat")]
    op = run(env_create, run_tasks, owner=bob, by=bob, name="bobs", vms=specs)
    env = Env.objects.get(pk=op.env_id)
    srv = env.vms.get(name="srv")
    netlab.wait_for_shell(qnode.public_host, public_port(srv, 23))
    return env


def test_envs_are_isolated_until_both_owners_peer_them(boot_env, bobs_env, qnode, alice, bob, run_tasks):
    alices = boot_env(name="alices", vms=("a1", "a2"))
    a1, a2 = alices.vms.get(name="a1"), alices.vms.get(name="a2")
    srv, flat = bobs_env.vms.get(name="srv"), bobs_env.vms.get(name="flat")
    netlab.wait_for_shell(qnode.public_host, public_port(a1, 23))
    # One Env's VMs reach each other, also a FLAT one; nothing of another Env's.
    assert http(a1, a2.ip) == "REACHED"
    assert ping(a1, a2.ip) == "REACHED"
    assert http(srv, flat.ip) == "REACHED"
    assert http(a1, srv.ip) == "BLOCKED"
    assert ping(a1, srv.ip) == "BLOCKED"
    assert http(a1, flat.ip) == "BLOCKED"
    assert http(srv, a1.ip) == "BLOCKED"
    assert get_engine(qnode).firewall.counters()["bridge: isolated"] > 0
    # A forwarded port is public: another Env's VM reaches it as anyone does.
    assert http(a1, qnode.public_host, public_port(srv, 80)) == "REACHED"

    # Asked by one owner: still apart. Accepted by the other: together.
    run(env_peer, run_tasks, env=alices, other=bobs_env, by=alice)
    assert http(a1, srv.ip) == "BLOCKED"
    run(env_peer, run_tasks, env=bobs_env, other=alices, by=bob)
    assert http(a1, srv.ip) == "REACHED"
    assert ping(a1, flat.ip) == "REACHED"
    assert http(srv, a2.ip) == "REACHED"

    run(env_unpeer, run_tasks, env=bobs_env, other=alices, by=bob)
    assert http(a1, srv.ip) == "BLOCKED"
    assert ping(a1, srv.ip) == "BLOCKED"
    assert http(a1, a2.ip) == "REACHED"


def test_a_vm_that_takes_another_address_reaches_nothing(boot_env, qnode):
    env = boot_env(name="spoof", vms=("a1", "a2"))
    a1, a2 = env.vms.get(name="a1"), env.vms.get(name="a2")
    netlab.wait_for_shell(qnode.public_host, public_port(a1, 23))
    firewall = get_engine(qnode).firewall
    tap = a1.to_spec().tap
    before = firewall.spoof_drops()[tap]
    assert ping(a1, a2.ip) == "REACHED"
    # a1 sends as a2 (of its own Env, even): from a2's address, nothing answers.
    out = shell(a1, f"ip addr add {a2.ip}/32 dev eth0; "
                f"ping -c 2 -W 2 -I {a2.ip} {qnode.gateway_ip} >/dev/null 2>&1 && echo GW || echo NOGW; "
                f"ip addr del {a2.ip}/32 dev eth0")
    assert out.strip() == "NOGW"
    assert firewall.spoof_drops()[tap] > before
    # And with its own address again, all is well.
    assert ping(a1, a2.ip) == "REACHED"


def test_the_node_host_answers_vms_only_dhcp_and_dns(boot_env, qnode, alice, run_tasks):
    env = boot_env(name="hostile")
    vm = env.vms.get()
    netlab.wait_for_shell(qnode.public_host, public_port(vm, 23))
    # Listeners on the host, on the bridge's address and on every address.
    servers = [_listen("0.0.0.0"), _listen(qnode.gateway_ip)]
    try:
        for address, port in ((qnode.gateway_ip, servers[0][1]), (qnode.gateway_ip, servers[1][1]),
                              (qnode.public_host, servers[0][1])):
            probe = f"nc -w 2 {address} {port} </dev/null >/dev/null 2>&1 && echo OPEN || echo SHUT"
            assert shell(vm, probe) == "SHUT", (address, port)
        # The host itself still reaches them (the rule is about VMs only).
        socket.create_connection((qnode.gateway_ip, servers[1][1]), timeout=2).close()
    finally:
        for sock, _ in servers:
            sock.close()
    assert get_engine(qnode).firewall.counters()["ip: host closed to VMs"] > 0
    # DHCP still works: the restarted guest gets its address again.
    run(vm_stop, run_tasks, vm=vm, by=alice)
    run(vm_start, run_tasks, vm=vm, by=alice)
    netlab.wait_for_http(f"http://{qnode.public_host}:{public_port(vm, 80)}/", expect=vm.ip)


def _listen(address: str) -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, 0))
    sock.listen()

    def accept():
        try:
            while True:
                conn, _ = sock.accept()
                conn.close()
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    return sock, sock.getsockname()[1]


def test_reconciliation_rebuilds_isolation_after_the_tables_are_flushed(boot_env, bobs_env, qnode):
    alices = boot_env(name="alices", vms=("a1", "a2"))
    a1, a2 = alices.vms.get(name="a1"), alices.vms.get(name="a2")
    srv = bobs_env.vms.get(name="srv")
    netlab.wait_for_shell(qnode.public_host, public_port(a1, 23))
    table = nft_table_name(qnode)
    subprocess.run(["nft", "flush", "table", "bridge", table], check=True)  # every rule gone
    for name in ("ports", "port_macs", "vm_ports", "port_reach"):
        subprocess.run(["nft", "flush", "set", "bridge", table, name], check=True)
    subprocess.run(["nft", "flush", "map", "bridge", table, "port_env"], check=True)
    assert http(a1, srv.ip) == "REACHED"  # what a flushed table lets through
    reconcile_nodes()
    assert http(a1, srv.ip) == "BLOCKED"
    assert http(a1, a2.ip) == "REACHED"


def test_the_rule_count_does_not_grow_with_vms_or_envs(boot_env, qnode):
    """Also: another node's tables on the same host (another bridge) leave this node's VMs alone."""
    env = boot_env(name="neighbour")
    vm = env.vms.get()
    firewall = NftablesFirewall(vm_network="10.103.0.0/16", bridge="ttbr-rules", table="tt_itest_rules",
                                port_prefix=port_prefix("tt-rules"))

    def vms(count: int) -> list[VmSpec]:
        return [VmSpec(id=i, name=f"tt-rules-{i}", template=TemplateSpec(name="t", path="t"), cpu_num=1,
                       mem_mb=64, disk_mb=64, mac=f"52:54:00:00:{i >> 8:02x}:{i & 255:02x}",
                       ip=f"10.103.{i >> 8}.{(i & 255) + 2}", env_id=1 + i // 5, reach=(1 + i // 5, 1000))
                for i in range(count)]

    try:
        firewall.rebuild(vms(2))
        few = firewall.rules()
        firewall.rebuild(vms(50))
        many = firewall.rules()
        assert len(firewall.listing()["ports"]) == 50
        netlab.wait_for_http(f"http://{qnode.public_host}:{public_port(vm, 80)}/", expect=vm.ip,
                             deadline_s=10)
    finally:
        firewall.drop_table()
    assert few == many > 0
