"""Node address arithmetic: the IP comes from the MAC's last three bytes, inside the node's network."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET

import pytest
from django.core.exceptions import ValidationError

from engines.libvirt import xml
from nodes.models import Node, validate_vm_network


def node(vm_network: str = "10.100.0.0/16", mac_prefix: str = "52:54:00") -> Node:
    # Unsaved: the arithmetic needs no database.
    return Node(name="n1", uri="test:///default", public_host="203.0.113.10",
                vm_network=vm_network, mac_prefix=mac_prefix)


def test_it_derives_the_ip_from_the_macs_low_16_bits_on_a_slash_16():
    n = node("10.100.0.0/16")
    assert n.ip_for_mac("52:54:00:00:01:02") == "10.100.1.2"
    assert n.ip_for_mac("52:54:00:00:ff:fd") == "10.100.255.253"
    # The third-from-last byte falls outside a /16's host part.
    assert n.ip_for_mac("52:54:00:07:01:02") == "10.100.1.2"


def test_it_gives_the_seeds_address_on_a_slash_8():
    # The seed: IP = 10.b3.b4.b5 for a MAC xx:xx:xx:b3:b4:b5.
    n = node("10.0.0.0/8")
    assert n.ip_for_mac("52:54:00:ab:cd:ef") == f"10.{0xab}.{0xcd}.{0xef}"
    assert n.ip_for_mac("52:54:00:01:02:03") == "10.1.2.3"
    for mac in ("52:54:00:00:00:02", "52:54:00:7f:00:01", "52:54:00:ff:ff:fd"):
        b3, b4, b5 = (int(x, 16) for x in mac.split(":")[3:])
        assert n.ip_for_mac(mac) == f"10.{b3}.{b4}.{b5}"


def test_it_uses_the_low_8_bits_on_a_slash_24():
    n = node("192.168.7.0/24")
    assert n.ip_for_mac("52:54:00:00:00:2a") == "192.168.7.42"
    assert n.ip_for_mac("52:54:00:12:34:2a") == "192.168.7.42"


@pytest.mark.parametrize("net", ["10.0.0.0/8", "10.100.0.0/16", "10.100.64.0/20", "192.168.7.0/24"])
def test_it_round_trips_index_mac_and_ip(net):
    n = node(net)
    lo, hi = n.host_index_bounds()
    network = ipaddress.IPv4Network(net)
    for index in (lo, lo + 1, (lo + hi) // 2, hi):
        mac = n.mac_for_index(index)
        assert mac.startswith("52:54:00:") and len(mac) == 17 and mac == mac.lower()
        assert Node.index_for_mac(mac) == index
        ip = ipaddress.IPv4Address(n.ip_for_mac(mac))
        assert ip == network.network_address + index == ipaddress.IPv4Address(n.ip_for_index(index))
        assert ip in network


def test_it_keeps_the_mac_prefix():
    n = node(mac_prefix="02:aa:bb")
    assert n.mac_for_index(0x0102) == "02:aa:bb:00:01:02"
    assert n.ip_for_mac(n.mac_for_index(0x0102)) == "10.100.1.2"


@pytest.mark.parametrize(
    ("net", "count"), [("10.0.0.0/8", 2**24 - 3), ("10.100.0.0/16", 65533), ("192.168.7.0/24", 253)]
)
def test_it_excludes_network_gateway_and_broadcast(net, count):
    n = node(net)
    network = ipaddress.IPv4Network(net)
    lo, hi = n.host_index_bounds()
    assert hi - lo + 1 == count
    first, last = ipaddress.IPv4Address(n.ip_for_index(lo)), ipaddress.IPv4Address(n.ip_for_index(hi))
    reserved = {
        network.network_address,
        ipaddress.IPv4Address(n.gateway_ip),
        network.broadcast_address,
    }
    assert first == network.network_address + 2
    assert last == network.broadcast_address - 1
    assert not {first, last} & reserved
    # Everything just outside the bounds is reserved.
    assert ipaddress.IPv4Address(n.ip_for_index(lo - 1)) in reserved
    assert ipaddress.IPv4Address(n.ip_for_index(hi + 1)) in reserved


def test_it_agrees_with_the_libvirt_network_on_gateway_and_dhcp_range():
    n = node("10.100.0.0/16")
    root = ET.fromstring(xml.network_xml("tt-net", "ttbr0", n.vm_network, "open"))
    ip = root.find("ip")
    assert ip.get("address") == n.gateway_ip == "10.100.0.1"
    assert ip.get("netmask") == "255.255.0.0"
    # The range spans exactly the addresses VMs are given (so dnsmasq's lease
    # table fits them all); each VM's host entry pins its own address.
    dhcp_range = ip.find("./dhcp/range")
    lo, hi = n.host_index_bounds()
    assert (dhcp_range.get("start"), dhcp_range.get("end")) == (n.ip_for_index(lo), n.ip_for_index(hi))


@pytest.mark.parametrize("good", ["10.0.0.0/8", "10.100.0.0/16", "172.16.0.0/12", "192.168.7.0/24"])
def test_it_accepts_an_ipv4_network_between_slash_8_and_slash_24(good):
    validate_vm_network(good)


@pytest.mark.parametrize(
    "bad",
    [
        "10.100.0.0/30",  # too small to hold a VM next to the reserved addresses
        "10.100.0.0/25",
        "10.0.0.0/7",  # the host part would need more than the MAC's 24 bits
        "fd00::/64",  # IPv6
        "10.100.0.1/16",  # host bits set
        "garbage",
        "",
        "10.100.0.0/33",
        "300.1.0.0/16",
    ],
)
def test_it_rejects_a_bad_network(bad):
    with pytest.raises(ValidationError):
        validate_vm_network(bad)


def test_it_validates_the_network_on_full_clean():
    n = node("10.100.0.0/30")
    with pytest.raises(ValidationError) as exc:
        n.full_clean(validate_unique=False, validate_constraints=False)
    assert "vm_network" in exc.value.message_dict


def test_it_rejects_a_reversed_port_range():
    n = node()
    n.port_min, n.port_max = 30000, 20000
    with pytest.raises(ValidationError) as exc:
        n.clean()
    assert "port_max" in exc.value.message_dict
