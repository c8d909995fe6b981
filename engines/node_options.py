"""What a driver is told about the node it runs: nodes/registry.py fills one from a Node
row and the site's settings; tests and benchmarks write one by hand.

Plain Python (no Django), like the rest of engines/. Each driver reads the fields it
needs; an empty string means "the driver's own default" where one is noted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engines.firecracker.hostnet import HostNetwork
    from engines.network.firewall import Firewall


@dataclass(frozen=True)
class NodeOptions:
    node_name: str = ""  # the node's name (docker labels what it makes with it)
    pool_name: str = "tt-pool"  # libvirt's storage pool
    pool_path: str = ""  # where images live; "": the driver's default directory
    network_name: str = "tt-net"
    bridge: str = "ttbr0"
    vm_network: str = "10.100.0.0/16"
    gateway_ip: str = ""  # "": the network's first address
    console_dir: str = ""  # "": no serial console log kept
    stop_timeout: float = 30  # seconds a graceful stop gets before it is forced
    reconnect_timeout: float = 30  # seconds a libvirt call waits for libvirtd to come back
    # libvirt on this host: at most this many saved VMs parked (QEMU launched ahead, each
    # ~50 MB and one libvirtd worker thread: engines/libvirt/parking.py); 0: none
    park_max: int = 16
    park_dir: str = ""  # "": /run/ttportal/parked
    api_timeout: float = 10  # seconds a new Firecracker process gets to answer on its socket
    firewall: Firewall | None = None  # None: bookkeeping in memory (MemoryFirewall)
    binary: str = ""  # the Firecracker binary; "": found on PATH
    jailer: str = ""  # the Firecracker jailer; "": none
    # docker: how commands reach a container, "auto" | "api" | "runc" (TT_DOCKER_EXEC)
    docker_exec: str = "auto"
    hostnet: HostNetwork | None = None  # Firecracker's host network (a test records it instead)
