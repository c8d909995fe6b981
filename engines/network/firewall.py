"""A node's firewall as sets and maps keyed by VM, whatever the number of VMs.

The NAT and egress design (docs/isolation.md): port forwarding is a map lookup (public
port -> VM ip . inner port), egress denial a set of VM addresses, the blacklist
a set of (VM ip . blocked ip) pairs, and `vm_addrs` every VM's address (its
element counts what the VM sent to networks it may not reach: `private_network`).
Isolation, on the bridge itself (frames between VMs never reach the `ip` hooks):

- `ports`: (port . MAC . IP) of each VM, `port_macs`: (port . MAC): a VM may
  send only from its own port, with its own MAC, and IPv4 or ARP only with its
  own address (DHCP before it has one);
- `port_chaddr`: (port . MAC as a number) of each VM: a DHCP request from a port must
  name that port's MAC as its client (`chaddr`);
- `vm_ports`: each VM's port, with a counter of the frames dropped as spoofed;
- `port_env`: port -> the VM's Env, `port_reach`: (port . Env) for every Env
  whose VMs may send to that port: its own, and those it is peered with.

Every change adds or removes one VM's elements in one atomic step and touches
nothing else.

Two ways to change a VM's elements:
- `apply(old, new)`: the caller knows what is installed (`old`); only the
  difference is written, so its cost is the size of the change whatever the
  number of VMs on the node (and unchanged counters keep counting);
- `replace_vm(vm)` / `remove_vm(vm)`: make them exactly `vm`'s (or none),
  whatever is installed; reads the VM's current elements first.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from engines.specs import VmSpec

# Which table family holds each set or map.
IP_SETS = ("fwd_tcp", "fwd_udp", "wake_tcp", "denied", "blacklist", "vm_addrs")
BRIDGE_SETS = ("ports", "port_macs", "port_chaddr", "vm_ports", "port_env", "port_reach")

# Why a VM's packets were dropped, as Firewall.drops_per_vm names it.
DROP_REASONS = ("egress_denied", "blacklisted", "private_network")


def mac_number(mac: str) -> int:
    """A MAC as the 48-bit number a raw payload match compares (the DHCP `chaddr`)."""
    return int(mac.replace(":", ""), 16)


@dataclass(frozen=True)
class Element:
    """One entry of a set or map: `key` identifies it, `value` is the map's data (or None)."""

    table: str  # one of IP_SETS or BRIDGE_SETS
    key: tuple
    value: tuple | None = None

    @property
    def family(self) -> str:
        return "bridge" if self.table in BRIDGE_SETS else "ip"

    @property
    def owner(self) -> str:
        """Whose it is: the VM's address (ip sets) or its port (bridge sets)."""
        if self.table == "wake_tcp":
            return wake_owner(self.key[0])  # its value is the waker's, shared by every sleeper
        if self.table.startswith("fwd_"):
            return self.value[0]
        return self.key[0]


def wake_owner(public_port: int) -> str:
    """The owner of a `wake_tcp` element: its public port (whose VM the port map says)."""
    return f"wake:{public_port}"


def elements_of(vm: VmSpec | None) -> list[Element]:
    if vm is None:
        return []
    items = [
        Element(f"fwd_{p.protocol}", (p.public_port,), (vm.ip, p.inner_port)) for p in vm.ports
    ]
    if vm.wake_to is not None:
        # Asleep: the same public TCP ports lead to the waker first (the VM's own elements stay).
        items += [Element("wake_tcp", (p.public_port,), tuple(vm.wake_to))
                  for p in vm.ports if p.protocol == "tcp"]
    if vm.deny_outgoing:
        items.append(Element("denied", (vm.ip,)))
    items.extend(Element("blacklist", (vm.ip, blocked)) for blocked in vm.blacklist)
    items += [
        Element("vm_addrs", (vm.ip,)),
        Element("ports", (vm.tap, vm.mac, vm.ip)),
        Element("port_macs", (vm.tap, vm.mac)),
        Element("port_chaddr", (vm.tap, mac_number(vm.mac))),
        Element("vm_ports", (vm.tap,)),
        Element("port_env", (vm.tap,), (vm.env_id,)),
    ]
    items.extend(Element("port_reach", (vm.tap, env)) for env in sorted({vm.env_id, *vm.reach}))
    return items


def owners_of(vm: VmSpec) -> set[str]:
    return {vm.ip, vm.tap} | {wake_owner(p.public_port) for p in vm.ports if p.protocol == "tcp"}


class Firewall(ABC):
    @abstractmethod
    def ensure(self) -> None:
        """Create the tables, sets, maps and rules if missing (idempotent, keeps elements)."""

    @abstractmethod
    def change(self, remove: list[Element], add: list[Element]) -> None:
        """Remove then add these elements in one atomic step; removing an absent one is fine."""

    @abstractmethod
    def installed(self, owners: set[str]) -> list[Element]:
        """Every element whose owner (a VM's address or port) is in `owners`, as installed now."""

    @abstractmethod
    def rebuild(self, vms: list[VmSpec]) -> None:
        """Make the sets and maps hold exactly these VMs' elements (node start)."""

    @abstractmethod
    def spoof_drops(self) -> dict[str, int]:
        """Frames dropped as spoofed, per VM port."""

    @abstractmethod
    def drops_per_vm(self) -> dict[str, dict[str, int]]:
        """Packets each VM was refused, by reason: VM ip -> {"egress_denied": n,
        "blacklisted": n, "private_network": n} (DROP_REASONS), for every VM of the node."""

    def port_connections(self) -> dict[tuple[str, int], int]:
        """New connections each forwarded port has taken, (protocol, public port) -> count:
        the element counters of `fwd_tcp`/`fwd_udp` (NAT looks a connection up once, at its
        first packet) and of `wake_tcp`. A counter starts again at 0 when its element is
        written again; the reader compares readings (envs/sleep.py)."""
        return {}

    def apply(self, old: VmSpec | None, new: VmSpec | None) -> None:
        before, after = elements_of(old), elements_of(new)
        self.change([e for e in before if e not in after], [e for e in after if e not in before])

    def add_vm(self, vm: VmSpec) -> None:
        self.change([], elements_of(vm))

    def installed_for(self, vm: VmSpec) -> list[Element]:
        return self.installed(owners_of(vm))

    def replace_vm(self, vm: VmSpec) -> None:
        before, after = self.installed_for(vm), elements_of(vm)
        self.change([e for e in before if e not in after], [e for e in after if e not in before])

    def remove_vm(self, vm: VmSpec) -> None:
        self.change(self.installed_for(vm), [])


@dataclass
class FirewallState:
    """Every set and map by name: key -> value (None for a plain set)."""

    tables: dict[str, dict[tuple, tuple | None]] = field(
        default_factory=lambda: {name: {} for name in (*IP_SETS, *BRIDGE_SETS)}
    )

    @property
    def port_map(self) -> dict[tuple[str, int], tuple]:
        return {(name[4:], key[0]): value for name in ("fwd_tcp", "fwd_udp")
                for key, value in self.tables[name].items()}

    @property
    def denied(self) -> set[str]:
        return {key[0] for key in self.tables["denied"]}

    @property
    def blacklist(self) -> set[tuple]:
        return set(self.tables["blacklist"])

    @property
    def reach(self) -> set[tuple]:
        return set(self.tables["port_reach"])

    @property
    def ports(self) -> set[tuple]:
        return set(self.tables["ports"])


class MemoryFirewall(Firewall):
    """Keeps the same sets and maps in memory: the firewall of libvirt's test driver.

    The test driver boots nothing, so there is no traffic to filter; this keeps
    the element bookkeeping honest so unit tests can check what a real node's
    nftables tables would hold.
    """

    def __init__(self) -> None:
        self.state = FirewallState()
        self._lock = threading.Lock()
        self.connections: dict[tuple[str, int], int] = {}  # port_connections(), set by tests

    def ensure(self) -> None:
        pass

    def change(self, remove: list[Element], add: list[Element]) -> None:
        with self._lock:
            tables = self.state.tables
            for e in remove:
                tables[e.table].pop(e.key, None)
            for e in add:
                current = tables[e.table].get(e.key)
                if current is not None and current != e.value:
                    raise RuntimeError(f"{e.table} {e.key} is mapped to {current} already")
                tables[e.table][e.key] = e.value

    def installed(self, owners: set[str]) -> list[Element]:
        found = []
        for name, entries in self.state.tables.items():
            for key, value in entries.items():
                element = Element(name, key, value)
                if element.owner in owners:
                    found.append(element)
        return found

    def rebuild(self, vms: list[VmSpec]) -> None:
        with self._lock:
            self.state = FirewallState()
        self.change([], [e for vm in vms for e in elements_of(vm)])

    def spoof_drops(self) -> dict[str, int]:
        return {key[0]: 0 for key in self.state.tables["vm_ports"]}

    def port_connections(self) -> dict[tuple[str, int], int]:
        """Nothing connects here: what a test set in `connections`, 0 for the other ports."""
        ports = {(name[-3:], key[0]) for name in ("fwd_tcp", "fwd_udp", "wake_tcp")
                 for key in self.state.tables[name]}
        return {port: self.connections.get(port, 0) for port in ports}

    def drops_per_vm(self) -> dict[str, dict[str, int]]:
        """Nothing is ever dropped here (nothing boots): zeros, for the VMs a real node counts."""
        ips = {key[0] for key in self.state.tables["vm_addrs"]}
        return {ip: dict.fromkeys(DROP_REASONS, 0) for ip in sorted(ips)}
