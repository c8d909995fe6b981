"""The tenant network boundary as the node's firewall writes it: forwarded traffic from VMs
never reaches a non-global address, a node's or the site's services but where the operator
allowed it; a denied VM's DNS stays on the node; a DHCP request names its own port's MAC.
What the kernel does with these rules is checked on the real node (tests/integration)."""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET

import pytest

from engines.libvirt import xml
from engines.network import addresses
from engines.network.firewall import Element, MemoryFirewall, elements_of
from engines.network.nftables import NftablesFirewall
from engines.specs import TemplateSpec, VmSpec


def firewall(**kwargs) -> NftablesFirewall:
    return NftablesFirewall(vm_network="10.120.0.0/16", bridge="ttbr-eg", table="tt_eg", port_prefix="teg",
                            **kwargs)


def vm(i: int = 5, **kwargs) -> VmSpec:
    return VmSpec(id=i, name=f"tt-eg-{i}", template=TemplateSpec(name="t", path="t"), cpu_num=1, mem_mb=64,
                  disk_mb=64, mac=f"52:54:00:00:00:{i:02x}", ip=f"10.120.0.{i}", env_id=1, **kwargs)


def set_elements(ruleset: str, family: str, name: str) -> list[str]:
    """The elements the ruleset writes into `family tt_eg name`."""
    found = re.findall(rf"add element {family} tt_eg {name} {{ (.*) }}", ruleset)
    return [item.strip() for line in found for item in line.split(",")]


def rules_of(chain: str) -> list[str]:
    return [line for line in firewall().ruleset().splitlines() if line.startswith(f"add rule {chain} ")]


def covered(elements: list[str], address: str) -> bool:
    return any(ipaddress.ip_address(address) in ipaddress.ip_network(e) for e in elements)


@pytest.mark.parametrize("address", [
    "10.1.2.3", "172.20.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254", "127.0.0.1", "0.0.0.1",
    "192.0.2.7", "198.51.100.7", "203.0.113.7", "198.18.0.2", "198.19.255.1", "224.0.0.251",
    "240.0.0.1", "255.255.255.255", "192.0.0.8",
])
def test_every_non_global_ipv4_destination_is_denied(address):
    assert covered(set_elements(firewall().ruleset(), "ip", "private_nets"), address)


@pytest.mark.parametrize("address", [
    "fd00::1", "fc12::1", "fe80::1", "::1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1",
    "2002:a00:1::1", "2001:db8::1", "ff02::1", "fec0::1",
])
def test_every_non_global_ipv6_destination_is_denied(address):
    assert covered(set_elements(firewall().ruleset(), "ip6", "private_nets"), address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111"])
def test_a_global_destination_is_not(address):
    ruleset = firewall().ruleset()
    denied = set_elements(ruleset, "ip", "private_nets") + set_elements(ruleset, "ip6", "private_nets")
    assert not covered(denied, address)


def test_the_operators_networks_join_the_sets_merged_where_they_overlap():
    ruleset = firewall(deny_networks=("8.8.8.0/24", "8.8.8.8", "2606:4700::/32", "10.5.0.0/16"),
                       allow_networks=("10.5.6.7", "fd00:1::/64")).ruleset()
    denied = set_elements(ruleset, "ip", "private_nets")
    assert "8.8.8.0/24" in denied and "8.8.8.8/32" not in denied  # an interval set refuses overlaps
    assert "10.5.0.0/16" not in denied and "10.0.0.0/8" in denied
    assert "2606:4700::/32" in set_elements(ruleset, "ip6", "private_nets")
    assert set_elements(ruleset, "ip", "allowed_nets") == ["10.5.6.7/32"]
    assert set_elements(ruleset, "ip6", "allowed_nets") == ["fd00:1::/64"]


def test_the_rules_do_not_grow_with_the_networks():
    def rule_count(**kwargs) -> int:
        return firewall(**kwargs).ruleset().count("add rule ")

    many = tuple(f"8.{i}.0.0/16" for i in range(200))
    assert rule_count() == rule_count(deny_networks=many, allow_networks=many[:50])


def test_the_drop_looks_up_the_vm_last_so_its_counter_is_that_vms_drops():
    rules = [line for line in firewall().ruleset().splitlines() if 'comment "private network"' in line]
    ip_rule = next(line for line in rules if line.startswith("add rule ip tt_eg"))
    assert "ip daddr @private_nets ip daddr != @allowed_nets ip saddr @vm_addrs counter drop" in ip_rule
    # The VM's own network and forwarded ports (DNAT) are let through before it.
    forward = rules_of("ip tt_eg forward")
    index = forward.index(ip_rule)
    assert any("ip daddr 10.120.0.0/16 accept" in line for line in forward[:index])
    assert any("ct status dnat accept" in line for line in forward[:index])


def test_a_denied_vms_dns_is_dropped_before_anything_accepts_it():
    inputs = rules_of("ip tt_eg input")
    dns_drop = next(i for i, line in enumerate(inputs) if "th dport 53 ip saddr @denied counter drop" in line)
    first_accept = next(i for i, line in enumerate(inputs) if line.endswith("accept"))
    assert dns_drop < first_accept


def test_dhcp_is_checked_before_a_vms_own_frames_are_accepted():
    pre = rules_of("bridge tt_eg prerouting")
    chaddr = next(i for i, line in enumerate(pre) if "@th,288,48 != @port_chaddr" in line)
    server = next(i for i, line in enumerate(pre) if "udp sport 67 iifname @vm_ports counter drop" in line)
    own = next(i for i, line in enumerate(pre) if "@ports accept" in line)
    assert chaddr < own and server < own
    assert "udp sport 68 udp dport 67" in pre[chaddr]  # from 0.0.0.0 or the VM's address alike


def test_every_vm_has_its_counted_address_and_its_mac_for_dhcp():
    elements = elements_of(vm(5))
    assert Element("vm_addrs", ("10.120.0.5",)) in elements
    assert Element("port_chaddr", (vm(5).tap, 0x525400000005)) in elements


def test_the_memory_firewall_reports_every_vm_with_every_reason():
    memory = MemoryFirewall()
    memory.rebuild([vm(5), vm(6, deny_outgoing=True)])
    assert memory.drops_per_vm() == {
        "10.120.0.5": {"egress_denied": 0, "blacklisted": 0, "private_network": 0},
        "10.120.0.6": {"egress_denied": 0, "blacklisted": 0, "private_network": 0},
    }


def test_a_host_is_resolved_to_its_addresses():
    assert addresses.resolve("192.0.2.9") == ("192.0.2.9",)
    assert addresses.resolve("[2001:db8::9]") == ("2001:db8::9",)
    assert "127.0.0.1" in addresses.resolve("localhost")  # /etc/hosts: no query leaves the machine
    assert addresses.resolve("") == ()


def test_the_libvirt_network_serves_known_macs_only():
    made = xml.network_xml("tt-net", "ttbr0", "10.100.0.0/16", "open")
    assert xml.serves_known_only(made)
    # A definition of an older version gains the option, its host entries kept.
    older = ET.fromstring(made)
    for options in older.findall(f"{{{xml.DNSMASQ_XMLNS}}}options"):
        older.remove(options)
    ET.SubElement(older.find("./ip/dhcp"), "host", mac="52:54:00:00:00:02", ip="10.100.0.2", name="a")
    older_xml = ET.tostring(older, encoding="unicode")
    assert not xml.serves_known_only(older_xml)
    upgraded = xml.with_known_only(older_xml)
    assert xml.serves_known_only(upgraded)
    assert ET.fromstring(upgraded).find("./ip/dhcp/host").get("mac") == "52:54:00:00:00:02"
    assert xml.with_known_only(upgraded).count(xml.KNOWN_ONLY) == 1
