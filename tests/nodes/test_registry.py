"""The engine registry (node -> driver): what a node's firewall is told to deny."""

from __future__ import annotations

import ipaddress
import re

from engines.network import addresses
from engines.network.nftables import NftablesFirewall
from nodes.models import Node
from nodes.registry import denied_destinations, node_firewall


def set_elements(ruleset: str, family: str, name: str) -> list[str]:
    """The elements the ruleset writes into `family tt_eg name`."""
    found = re.findall(rf"add element {family} tt_eg {name} {{ (.*) }}", ruleset)
    return [item.strip() for line in found for item in line.split(",")]


def test_every_nodes_addresses_and_the_sites_services_are_denied(db, settings):
    settings.TT_SITE_SERVICE_HOSTS = ("192.0.2.50",)
    settings.TT_VM_DENY_NETWORKS = (ipaddress.ip_network("8.8.4.0/24"),)
    settings.TT_VM_ALLOW_NETWORKS = (ipaddress.ip_network("10.9.0.0/24"),)
    kw = dict(kind="libvirt", vm_network="10.121.0.0/16", mac_prefix="52:54:01")
    here = Node.objects.create(name="here", uri="qemu:///system", public_host="203.0.113.10", **kw)
    Node.objects.create(name="there", uri="qemu+ssh://198.51.100.20/system", public_host="2001:db8::20",
                        **{**kw, "vm_network": "10.122.0.0/16", "mac_prefix": "52:54:02"})
    denied = {str(n) for n in addresses.networks(denied_destinations())}
    assert {"192.0.2.50/32", "8.8.4.0/24", "203.0.113.10/32", "198.51.100.20/32",
            "2001:db8::20/128"} <= denied
    built = node_firewall(here)
    assert isinstance(built, NftablesFirewall)
    assert "8.8.4.0/24" in set_elements(built.ruleset().replace("tt_here", "tt_eg"), "ip", "private_nets")
    assert set_elements(built.ruleset().replace("tt_here", "tt_eg"), "ip", "allowed_nets") == ["10.9.0.0/24"]
