"""Every host-network command of the Firecracker driver: the node bridge and the VMs' taps.

One small class, so unit tests substitute a recorder for it (nothing here can run
without root and a real network stack). iproute2's `ip` does the work.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SYS_NET = Path("/sys/class/net")


class HostNetwork:
    def ensure_bridge(self, bridge: str, address: str) -> None:
        """The node bridge, up, holding `address` (the gateway, e.g. "10.100.0.1/16"). Idempotent."""
        if not self.has_link(bridge):
            self._ip("link", "add", "name", bridge, "type", "bridge")
        if f"inet {address} " not in self._ip("-o", "-4", "addr", "show", "dev", bridge):
            self._ip("addr", "add", address, "dev", bridge)
        self._ip("link", "set", bridge, "up")

    def add_tap(self, tap: str, bridge: str) -> None:
        """A tap for one VM, on the bridge and up; a leftover of that name is replaced."""
        self.remove_tap(tap)
        self._ip("tuntap", "add", "dev", tap, "mode", "tap")
        self._ip("link", "set", tap, "master", bridge)
        self._ip("link", "set", tap, "up")

    def remove_tap(self, tap: str) -> None:
        """Remove a VM's tap; a missing one is fine."""
        if self.has_link(tap):
            self._ip("link", "del", tap)

    def has_link(self, name: str) -> bool:
        return (SYS_NET / name).exists()

    @staticmethod
    def _ip(*args: str) -> str:
        result = subprocess.run(["ip", *args], capture_output=True, text=True)
        if result.returncode != 0:
            said = result.stderr.strip() or result.stdout.strip()
            raise RuntimeError(f"ip {' '.join(args)} failed: {said}")
        return result.stdout
