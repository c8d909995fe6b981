"""Engine kinds -> driver classes, and one engine instance per process and node."""

from __future__ import annotations

import importlib
import re
import threading
from urllib.parse import urlsplit

from django.conf import settings

from engines.base import VmEngine
from engines.network.addresses import host_networks
from engines.network.firewall import Firewall, MemoryFirewall
from engines.node_options import NodeOptions
from engines.specs import port_prefix
from nodes.models import Node
from ttportal.errors import EngineError, ErrorCode

DRIVERS: dict[str, str] = {
    "libvirt": "engines.libvirt.engine.LibvirtEngine",
    "docker": "engines.docker.engine.DockerEngine",
    "firecracker": "engines.firecracker.engine.FirecrackerEngine",
}

_instances: dict[tuple, VmEngine] = {}
_lock = threading.Lock()


def driver_class(kind: str) -> type[VmEngine]:
    try:
        dotted = DRIVERS[kind]
    except KeyError:
        raise EngineError(f"no driver for engine kind {kind!r}", code=ErrorCode.ENGINE_INIT) from None
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def nft_table_name(node: Node) -> str:
    return "tt_" + re.sub(r"[^a-zA-Z0-9_]", "_", node.name)


def node_firewall(node: Node) -> Firewall:
    """libvirt's test driver boots nothing: its firewall is bookkeeping in memory.
    A real node gets its own nftables table."""
    if node.is_test_driver:
        return MemoryFirewall()
    from engines.network.nftables import NftablesFirewall

    others = Node.objects.exclude(pk=node.pk).exclude(uri__startswith="test://")
    return NftablesFirewall(vm_network=node.vm_network, bridge=node.bridge, table=nft_table_name(node),
                            port_prefix=port_prefix(f"tt-{node.name}"), host_open=settings.TT_VM_HOST_PORTS,
                            other_networks=tuple(others.values_list("vm_network", flat=True)),
                            deny_networks=denied_destinations(), allow_networks=settings.TT_VM_ALLOW_NETWORKS)


def denied_destinations() -> tuple:
    """Beyond the non-global ranges every firewall denies: the operator's TT_VM_DENY_NETWORKS,
    every node's public and management addresses, and the site's services."""
    hosts = set(settings.TT_SITE_SERVICE_HOSTS)
    for public_host, uri in Node.objects.values_list("public_host", "uri"):
        hosts.add(public_host)
        hosts.add(urlsplit(uri).hostname or "")  # qemu+ssh://host/system, tcp://host:2375
    return tuple(settings.TT_VM_DENY_NETWORKS) + tuple(host_networks(sorted(h for h in hosts if h)))


def node_options(node: Node) -> NodeOptions:
    """What the node's driver is told: the row's fields and the site's settings."""
    return NodeOptions(
        node_name=node.name,
        pool_name=node.pool_name,
        pool_path=str(settings.TT_POOL_DIR / node.pool_name),
        network_name=node.network_name,
        bridge=node.bridge,
        vm_network=node.vm_network,
        gateway_ip=node.gateway_ip,
        console_dir="" if node.is_test_driver else str(settings.TT_CONSOLE_DIR),
        stop_timeout=settings.TT_STOP_TIMEOUT,
        park_max=settings.TT_PARK_MAX,
        firewall=node_firewall(node),
        binary=node.binary,
        jailer=node.jailer,
        docker_exec=settings.TT_DOCKER_EXEC,
    )


def _key(node: Node) -> tuple:
    return (node.pk, node.kind, node.uri, node.pool_name, node.network_name, node.bridge, node.vm_network)


def get_engine(node: Node) -> VmEngine:
    """The engine for `node`, initialised once per process (the seed's `init`)."""
    key = _key(node)
    with _lock:
        engine = _instances.get(key)
        if engine is None:
            engine = driver_class(node.kind)(uri=node.uri, options=node_options(node))
            engine.init()
            _instances[key] = engine
        return engine


def drops_per_vm(node: Node) -> dict[str, dict[str, int]]:
    """What the node's firewall refused each VM (Firewall.drops_per_vm), read without
    setting up the node: a real node's counters are in its nftables tables; the test
    driver's live in its engine's memory."""
    firewall = get_engine(node).firewall if node.is_test_driver else node_firewall(node)
    return firewall.drops_per_vm()


def console_log(node: Node, vm_name: str) -> str | None:
    """The end of a VM's serial console (see VmEngine.console_log), read through a
    driver that is not initialised: showing a log must not set up the node."""
    return driver_class(node.kind)(uri=node.uri, options=node_options(node)).console_log(vm_name)


def node_health(node: Node) -> tuple[bool, str]:
    """The node's driver's own check (VmEngine.health), through a driver that is not
    initialised: a page view must not set up a node. Whatever goes wrong (an unknown kind,
    a daemon that does not answer, a driver bug) is the finding, never a failed page."""
    try:
        return driver_class(node.kind)(uri=node.uri, options=node_options(node)).health()
    except Exception as exc:
        return False, f"{exc.__class__.__name__}: {exc}"


def forget_engines() -> None:
    """Drop cached engines (tests, or after a node's settings change)."""
    with _lock:
        _instances.clear()
