"""The seed's Network trait, once for every engine: the node's firewall sets and maps.

Every engine wires a VM the same way (docs/isolation.md): forwarded ports, egress denial,
the blacklist and isolation are elements of the node's nftables tables, keyed by
the VM's address and its port on the node bridge. What differs is only how the
guest gets the address its MAC implies: libvirt's DHCP hands it out, a container
is created with it, a Firecracker guest takes it from its kernel command line.
An engine says so by overriding `put_address`/`drop_address`.
"""

from __future__ import annotations

from engines.base import Network
from engines.network.firewall import Element, Firewall
from engines.specs import VmSpec


class FirewalledNetwork(Network):
    firewall: Firewall

    def put_address(self, vm: VmSpec) -> None:
        """Make the node hand `vm` its address (a DHCP entry); nothing to do by default."""

    def drop_address(self, vm: VmSpec) -> None:
        """Undo put_address; a missing entry is fine."""

    def set_net(self, vm: VmSpec, previous: VmSpec | None = None) -> None:
        """The address and the firewall elements; with `previous` (what is installed now)
        only the difference is applied."""
        self.put_address(vm)
        if previous is not None:
            self.firewall.apply(previous, vm)
        else:
            self.firewall.add_vm(vm)

    def resync_net(self, vm: VmSpec) -> None:
        self.put_address(vm)
        self.firewall.replace_vm(vm)

    def unset_net(self, vm: VmSpec) -> None:
        self.firewall.remove_vm(vm)
        self.drop_address(vm)

    def deny_outgoing(self, vm: VmSpec) -> None:
        self.firewall.change([], [Element("denied", (vm.ip,))])

    def allow_outgoing(self, vm: VmSpec) -> None:
        self.firewall.change([Element("denied", (vm.ip,))], [])

    def set_reach(self, vm: VmSpec, previous: VmSpec) -> None:
        self.firewall.apply(previous, vm)

    def set_blacklist(self, vm: VmSpec, previous: VmSpec | None = None) -> None:
        if previous is not None:
            self.firewall.apply(previous, vm)
        else:
            self.firewall.replace_vm(vm)
