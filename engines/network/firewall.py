"""Port forwarding and egress policy of one node, as sets and maps keyed by VM.

The NAT design (DESIGN.md): port forwarding is a map lookup (public port ->
VM ip . inner port), egress denial a set of VM addresses, the blacklist a set of
(VM ip . blocked ip) pairs. Every change adds or removes one VM's elements
in one atomic step and touches nothing else.

Two ways to change a VM's elements:
- `apply(old, new)`: the caller knows what is installed (`old`); cost is the
  size of the change, whatever the number of VMs on the node.
- `replace_vm(vm)` / `remove_vm(vm)`: make them exactly `vm`'s (or none),
  whatever is installed; reads the VM's current elements first.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from engines.specs import VmSpec


@dataclass(frozen=True)
class Element:
    """One entry of a set or map: `key` identifies it, `value` is the map's data (or None)."""

    table: str  # "fwd_tcp", "fwd_udp", "denied", "blacklist"
    key: tuple
    value: tuple | None = None


def elements_of(vm: VmSpec | None) -> list[Element]:
    if vm is None:
        return []
    items = [
        Element(f"fwd_{p.protocol}", (p.public_port,), (vm.ip, p.inner_port)) for p in vm.ports
    ]
    if vm.deny_outgoing:
        items.append(Element("denied", (vm.ip,)))
    items.extend(Element("blacklist", (vm.ip, blocked)) for blocked in vm.blacklist)
    return items


def owner_ip(element: Element) -> str:
    return element.value[0] if element.value is not None else element.key[0]


class Firewall(ABC):
    @abstractmethod
    def ensure(self) -> None:
        """Create the table, sets, maps and rules if missing (idempotent, keeps elements)."""

    @abstractmethod
    def change(self, remove: list[Element], add: list[Element]) -> None:
        """Remove then add these elements in one atomic step; removing an absent one is fine."""

    @abstractmethod
    def installed_for(self, ip: str) -> list[Element]:
        """Every element that belongs to the VM with this address, as installed now."""

    @abstractmethod
    def rebuild(self, vms: list[VmSpec]) -> None:
        """Make the sets and maps hold exactly these VMs' elements (node start)."""

    def apply(self, old: VmSpec | None, new: VmSpec | None) -> None:
        self.change(elements_of(old), elements_of(new))

    def add_vm(self, vm: VmSpec) -> None:
        self.apply(vm, vm)

    def replace_vm(self, vm: VmSpec) -> None:
        self.change(self.installed_for(vm.ip), elements_of(vm))

    def remove_vm(self, vm: VmSpec) -> None:
        self.change(self.installed_for(vm.ip), [])


@dataclass
class FirewallState:
    port_map: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)
    blacklist: set[tuple[str, str]] = field(default_factory=set)


class MemoryFirewall(Firewall):
    """Keeps the same sets and maps in memory: the firewall of libvirt's test driver.

    The test driver boots nothing, so there is no traffic to filter; this keeps
    the element bookkeeping honest so unit tests can check what a real node's
    nftables table would hold.
    """

    def __init__(self) -> None:
        self.state = FirewallState()
        self._lock = threading.Lock()

    def ensure(self) -> None:
        pass

    def change(self, remove: list[Element], add: list[Element]) -> None:
        with self._lock:
            s = self.state
            for e in remove:
                if e.table.startswith("fwd_"):
                    s.port_map.pop((e.table[4:], e.key[0]), None)
                elif e.table == "denied":
                    s.denied.discard(e.key[0])
                else:
                    s.blacklist.discard(e.key)
            for e in add:
                if e.table.startswith("fwd_"):
                    current = s.port_map.get((e.table[4:], e.key[0]))
                    if current is not None and current != e.value:
                        raise RuntimeError(f"{e.table} {e.key[0]} is mapped to {current} already")
                    s.port_map[(e.table[4:], e.key[0])] = e.value
                elif e.table == "denied":
                    s.denied.add(e.key[0])
                else:
                    s.blacklist.add(e.key)

    def installed_for(self, ip: str) -> list[Element]:
        s = self.state
        found = [
            Element(f"fwd_{proto}", (port,), value)
            for (proto, port), value in s.port_map.items() if value[0] == ip
        ]
        if ip in s.denied:
            found.append(Element("denied", (ip,)))
        found.extend(Element("blacklist", pair) for pair in s.blacklist if pair[0] == ip)
        return found

    def rebuild(self, vms: list[VmSpec]) -> None:
        with self._lock:
            self.state = FirewallState()
        self.change([], [e for vm in vms for e in elements_of(vm)])
