"""The host side of a container's network interface, named as the node's firewall expects.

The node's bridge rules bind each VM to the port it sends from (engines.specs.tap_name),
and podman's network backend names the host end of a container's veth pair itself
(`veth0`, `veth1`, …, afresh at every start). So at each start the engine finds that
end, through the container's network namespace, and renames it, between podman's
`init` (namespace and network ready, no process of the image running yet) and the
start: the container's first frame already comes from the port its rules name.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

SYS_NET = Path("/sys/class/net")


class HostPortError(RuntimeError):
    pass


def _run(*cmd: str) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise HostPortError(f"{' '.join(cmd)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def peer_index(netns: str, interface: str = "eth0") -> int:
    """The host-side ifindex of the container's `interface` (its veth peer). Asked over
    netlink inside the namespace: /sys would still show the host's own interfaces."""
    links = json.loads(_run("nsenter", f"--net={netns}", "ip", "-j", "link", "show", "dev", interface))
    if not links or "link_index" not in links[0]:
        raise HostPortError(f"{interface} in {netns} is not one end of a veth pair")
    return int(links[0]["link_index"])


def name_of_index(index: int) -> str:
    for link in SYS_NET.iterdir():
        try:
            if int((link / "ifindex").read_text()) == index:
                return link.name
        except (OSError, ValueError):
            continue  # went away while we looked
    raise HostPortError(f"no host interface has index {index}")


def rename(current: str, wanted: str) -> None:
    """Give the port its name (a link must be down to be renamed). A stale link of
    that name, left by a start that died half-way, is removed first."""
    if current == wanted:
        return
    if (SYS_NET / wanted).exists():
        _run("ip", "link", "delete", wanted)
    _run("ip", "link", "set", "dev", current, "down")
    _run("ip", "link", "set", "dev", current, "name", wanted)
    _run("ip", "link", "set", "dev", wanted, "up")


def bridge_of(name: str) -> str:
    master = SYS_NET / name / "master"
    return master.resolve().name if master.exists() else ""


def name_container_port(netns: str, wanted: str, bridge: str) -> str:
    """Rename the host end of the container's eth0 to `wanted`; what it was called. Only
    a port of the node's bridge is ever renamed (never, say, the host's own uplink)."""
    current = name_of_index(peer_index(netns))
    if bridge_of(current) != bridge:
        raise HostPortError(f"the container's peer {current} is not a port of bridge {bridge}")
    rename(current, wanted)
    return current
