"""The node's bridge rules judge every frame between VMs, wherever br_netfilter is active.

br_netfilter hands each bridged IP or ARP frame to the `ip` hooks from its own bridge
forward hook (priority 0) and, once they are done, resumes only the bridge hooks above
priority 0. Its hooks are registered in a network namespace when the first bridge appears
there, so a table made before that (a docker node on a fresh host: podman makes its
bridge only at the first container's start) is the case that once let containers of two
Envs reach each other. Here it is made so in a namespace of its own, with VMs as
namespaces on veth pairs."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from engines.network.firewall import elements_of
from engines.network.nftables import BRIDGE_FORWARD_PRIORITY, NftablesFirewall, nft
from engines.specs import TemplateSpec, VmSpec, port_prefix

NODE_NS, BRIDGE, TABLE = "ttbnf-node", "ttbr-bnf", "tt_bnf_test"
VMS = {"a1": (1, 1), "a2": (2, 1), "b1": (3, 2)}  # name: (id, Env)
LISTEN = ("import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 80)); s.listen(8); "
          "time.sleep(30)")
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], 80), timeout=2); print('REACHED')"


def sh(*cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30).stdout


def in_ns(ns: str, *cmd: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *cmd, check=check)


def vm(name: str) -> VmSpec:
    vm_id, env = VMS[name]
    return VmSpec(id=vm_id, name=f"tt-bnf-{vm_id}", template=TemplateSpec(name="t", path="t"), cpu_num=1,
                  mem_mb=64, disk_mb=64, mac=f"52:54:00:00:00:0{vm_id}", ip=f"10.108.0.{10 + vm_id}",
                  env_id=env)


def cleanup() -> None:
    for ns in (NODE_NS, *(f"ttbnf-{name}" for name in VMS)):
        sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def node():
    """The node's tables in a namespace with no bridge yet; then its bridge and three VMs."""
    cleanup()
    sh("ip", "netns", "add", NODE_NS)
    firewall = NftablesFirewall(vm_network="10.108.0.0/16", bridge=BRIDGE, table=TABLE,
                                port_prefix=port_prefix("tt-bnf"))
    script = firewall.ruleset() + firewall._script([], [e for n in VMS for e in elements_of(vm(n))])
    subprocess.run(["ip", "netns", "exec", NODE_NS, "nft", "-f", "-"], input=script, text=True,
                   check=True, capture_output=True)
    in_ns(NODE_NS, "ip", "link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    in_ns(NODE_NS, "ip", "link", "set", BRIDGE, "up")
    for name in VMS:
        spec, ns = vm(name), f"ttbnf-{name}"
        sh("ip", "netns", "add", ns)
        in_ns(NODE_NS, "ip", "link", "add", spec.tap, "type", "veth", "peer", "name", "eth0", "netns", ns)
        in_ns(NODE_NS, "ip", "link", "set", spec.tap, "master", BRIDGE, "up")
        in_ns(ns, "ip", "link", "set", "eth0", "address", spec.mac)
        in_ns(ns, "ip", "addr", "add", f"{spec.ip}/16", "dev", "eth0")
        in_ns(ns, "ip", "link", "set", "eth0", "up")
        in_ns(ns, "ip", "link", "set", "lo", "up")
    servers = [subprocess.Popen(["ip", "netns", "exec", f"ttbnf-{n}", sys.executable, "-c", LISTEN])
               for n in ("a2", "b1")]
    time.sleep(0.5)
    yield
    for server in servers:
        server.kill()
        server.wait()
    cleanup()


def reach(src: str, dst: str) -> str:
    out = in_ns(f"ttbnf-{src}", sys.executable, "-c", CONNECT, vm(dst).ip, check=False)
    return "REACHED" if "REACHED" in out else "BLOCKED"


def test_a_table_made_before_the_first_bridge_still_isolates_envs(node):
    assert reach("a1", "a2") == "REACHED"
    assert reach("a1", "b1") == "BLOCKED"
    listing = in_ns(NODE_NS, "nft", "list", "chain", "bridge", TABLE, "forward")
    dropped = re.search(r'counter packets (\d+) bytes \d+ drop comment "isolated"', listing)
    assert dropped and int(dropped.group(1)) > 0


@pytest.mark.parametrize("step", ["ensure", "rebuild"])
def test_a_forward_chain_an_older_version_hooked_at_0_is_made_again(step):
    firewall = NftablesFirewall(vm_network="10.108.0.0/16", bridge=BRIDGE, table=TABLE,
                                port_prefix=port_prefix("tt-bnf"))
    firewall.drop_table()
    try:
        nft(firewall.ruleset().replace(f"hook forward priority {BRIDGE_FORWARD_PRIORITY};",
                                       "hook forward priority 0;"))
        firewall.ensure() if step == "ensure" else firewall.rebuild([vm("a1")])
        chain = nft(args=("list", "chain", "bridge", TABLE, "forward"))
        assert "hook forward priority filter;" in chain and 'comment "isolated"' in chain
        firewall.ensure()  # up to date now: written again in place
        # The same whatever the VMs: 8 of them are the egress boundary's, 3 the waker's (wake_tcp
        # looked up in prerouting and output, and the input rule that lets its DNATed connections in).
        assert firewall.rules() == 42
    finally:
        firewall.drop_table()
