"""A libvirt network's DHCP host entries, kept exactly as wanted, whatever is there now.

libvirt keeps two definitions of a network: the live one (what dnsmasq hands
out) and the persistent one (what it starts with next time). One update call
with AFFECT_LIVE | AFFECT_CONFIG changes both, but refuses the whole call when
either one holds an entry that matches the new one by MAC, name or IP ("there is
an existing dhcp host entry"), and a delete when either one lacks the entry. A
step cut short (a worker killed, libvirtd restarted, a network redefined) can
leave the two apart, or leave an entry of this VM's name or address with an older
MAC. So each definition is read and changed on its own, and whatever matches the
wanted entry by MAC, name or IP without being it goes first.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from engines.libvirt import xml

_LIVE = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
_CONFIG = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
_SECTION = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST


def _definitions(net: libvirt.virNetwork) -> list[tuple[int, list[ET.Element]]]:
    """(update flag, host entries) of each definition the network has."""
    try:
        defs = [(_CONFIG, net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))]
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        # libvirt's test:///default driver keeps one definition and has no such flag.
        return [(_CONFIG | (_LIVE if net.isActive() else 0), _hosts(net.XMLDesc(0)))]
    if net.isActive():
        defs.append((_LIVE, net.XMLDesc(0)))
    return [(flag, _hosts(desc)) for flag, desc in defs]


def _hosts(desc: str) -> list[ET.Element]:
    return list(ET.fromstring(desc).iterfind("./ip/dhcp/host"))


def _delete(net: libvirt.virNetwork, flag: int, host: ET.Element) -> None:
    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, _SECTION, -1,
               ET.tostring(host, encoding="unicode"), flag)


def reservations(net: libvirt.virNetwork) -> dict[str, str]:
    """MAC -> IP of every entry; an entry that the two definitions do not hold alike
    maps to "" (so a reconciliation puts it right or removes it)."""
    seen: list[dict[str, str]] = [
        {h.get("mac"): h.get("ip") for h in hosts if h.get("mac")} for _flag, hosts in _definitions(net)
    ]
    macs = set().union(*seen)
    return {mac: (seen[0].get(mac) if all(s.get(mac) == seen[0].get(mac) for s in seen) else "")
            for mac in macs}


def put(net: libvirt.virNetwork, mac: str, ip: str, name: str) -> None:
    """Make (mac, ip, name) an entry of each definition; entries in its way go."""
    wanted = {"mac": mac, "ip": ip, "name": name}
    for flag, hosts in _definitions(net):
        if any(all(h.get(k) == v for k, v in wanted.items()) for h in hosts):
            continue
        for host in hosts:
            if any(host.get(k) == v for k, v in wanted.items() if v):
                _delete(net, flag, host)
        net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, _SECTION, -1,
                   xml.dhcp_host_xml(mac, ip, name), flag)


def drop(net: libvirt.virNetwork, mac: str) -> None:
    """No entry of `mac` in either definition."""
    for flag, hosts in _definitions(net):
        for host in hosts:
            if host.get("mac") == mac:
                _delete(net, flag, host)
