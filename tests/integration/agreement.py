"""What a real node holds against what the database says it should, item by item.

Domains and runtime images (libvirt), forwarded ports, denied addresses and
blacklist pairs (the node's nftables table), DHCP reservations (the libvirt
network). Used after fault injection: the two must agree exactly.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from engines.libvirt.connection import get_connection
from nodes.models import Node
from nodes.registry import node_firewall
from vms.models import PortMapping, Vm


def _value(element):
    """An element (or a map element's key) as nft lists it, without its counter: the sets
    and maps that count per element list each as {"elem": {"val": ..., "counter": ...}}."""
    return element["elem"]["val"] if isinstance(element, dict) and "elem" in element else element


def on_node(node: Node) -> dict:
    conn = get_connection(node.uri)
    prefix = f"tt-{node.name}-"
    pool = conn.storagePoolLookupByName(node.pool_name)
    pool.refresh(0)
    network = ET.fromstring(conn.networkLookupByName(node.network_name).XMLDesc(0))
    tables = node_firewall(node).listing()
    return {
        "domains": {d.name() for d in conn.listAllDomains() if d.name().startswith(prefix)},
        "images": {v.name() for v in pool.listAllVolumes() if v.name().startswith(prefix)},
        "forwards": {(name[4:], _value(e[0]), *e[1]["concat"]) for name in ("fwd_tcp", "fwd_udp")
                     for e in tables.get(name, [])},
        "denied": {_value(e) for e in tables.get("denied", [])},
        "blacklist": {tuple(_value(e)["concat"]) for e in tables.get("blacklist", [])},
        "dhcp": {(h.get("mac"), h.get("ip")) for h in network.iter("host")},
    }


def in_database(node: Node) -> dict:
    live = list(Vm.objects.live().filter(node=node).select_related("env"))
    kept = Vm.objects.filter(node=node, status=Vm.Status.DESTROYED, keep_image=True)
    ports = PortMapping.objects.filter(vm__in=live).select_related("vm")
    return {
        "domains": {vm.engine_name for vm in live},
        "images": {f"{vm.engine_name}.qcow2" for vm in [*live, *kept]},
        "forwards": {(p.protocol, p.public_port, p.vm.ip, p.inner_port) for p in ports},
        "denied": {vm.ip for vm in live if vm.env.deny_outgoing},
        "blacklist": {(vm.ip, blocked) for vm in live for blocked in vm.net_blacklist or []},
        "dhcp": {(vm.mac, vm.ip) for vm in live},
    }


def assert_agree(node: Node) -> None:
    node_has, db_says = on_node(node), in_database(node)
    for key in db_says:
        assert node_has[key] == db_says[key], (
            f"{key}: only on the node {node_has[key] - db_says[key]}, "
            f"only in the database {db_says[key] - node_has[key]}"
        )


def assert_empty(node: Node) -> None:
    assert all(not items for items in on_node(node).values()), on_node(node)
