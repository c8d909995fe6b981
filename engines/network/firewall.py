"""Port forwarding and egress policy of one node, as sets and maps keyed by VM.

The NAT design (DESIGN.md): port forwarding is a map lookup (public port ->
VM ip . inner port), egress denial a set of VM addresses, the blacklist a set of
(VM ip . blocked ip) pairs. Every change adds or removes exactly one VM's
elements, so it is idempotent and touches nothing else.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from engines.specs import VmSpec


class Firewall(ABC):
    @abstractmethod
    def ensure(self) -> None:
        """Create the table/chains if missing (idempotent)."""

    @abstractmethod
    def add_vm(self, vm: VmSpec) -> None:
        """Make the VM's port forwards, egress denial and blacklist exactly as `vm` says."""

    @abstractmethod
    def remove_vm(self, vm: VmSpec) -> None:
        """Remove every element that belongs to the VM."""


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

    def add_vm(self, vm: VmSpec) -> None:
        with self._lock:
            self._remove(vm.ip)
            for port in vm.ports:
                self.state.port_map[(port.protocol, port.public_port)] = (vm.ip, port.inner_port)
            if vm.deny_outgoing:
                self.state.denied.add(vm.ip)
            self.state.blacklist |= {(vm.ip, blocked) for blocked in vm.blacklist}

    def remove_vm(self, vm: VmSpec) -> None:
        with self._lock:
            self._remove(vm.ip)

    def _remove(self, ip: str) -> None:
        s = self.state
        s.port_map = {k: v for k, v in s.port_map.items() if v[0] != ip}
        s.denied.discard(ip)
        s.blacklist = {pair for pair in s.blacklist if pair[0] != ip}
