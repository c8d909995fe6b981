"""libvirt XML documents built from plain data (ElementTree does the escaping)."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET

from engines.specs import VmSpec

TT_XMLNS = "https://tt-portal.invalid/xmlns/vm/1"
# libvirt passes these options to the network's dnsmasq verbatim.
DNSMASQ_XMLNS = "http://libvirt.org/schemas/network/dnsmasq/1.0"
ET.register_namespace("dnsmasq", DNSMASQ_XMLNS)
# dnsmasq answers only the clients a host entry names (it tags them "known"): a guest that
# makes up a MAC gets no address, whatever the range below.
KNOWN_ONLY = "dhcp-ignore=tag:!known"
DHCP_LEASE_MINUTES = 10
# The guest zeroes the memory it frees, so its saved memory (QEMU writes zero pages as
# nothing) holds only what it uses: 52 MiB instead of 90 for the busybox guest of 128 MiB.
# Only for a VM booted to be saved (VmSpec.zero_freed_memory): the kernel then zeroes all
# its memory as it frees it at boot, some 0.2 s of CPU per boot of that guest under TCG
# (docs/benchmarks.md), which a cold boot does not pay.
ZERO_FREED_MEMORY = "init_on_free=1"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _tostring(root: ET.Element) -> str:
    return ET.tostring(root, encoding="unicode")


def domain_xml(
    vm: VmSpec,
    *,
    domain_type: str,
    disk_path: str,
    network_name: str,
    console_log: str = "",
    arch: str = "",
    seed_path: str = "",
) -> str:
    root = ET.Element("domain", {"type": domain_type})
    _sub(root, "name", vm.name)
    if vm.uuid:
        _sub(root, "uuid", vm.uuid)
    meta = _sub(root, "metadata")
    tt = ET.SubElement(meta, "tt:vm", {"xmlns:tt": TT_XMLNS})
    ET.SubElement(tt, "tt:id").text = str(vm.id)
    ET.SubElement(tt, "tt:template").text = vm.template.name
    _sub(root, "memory", str(vm.mem_mb), unit="MiB")
    _sub(root, "vcpu", str(vm.cpu_num))
    os_el = _sub(root, "os")
    type_attrs = {"arch": arch} if arch else {}
    _sub(os_el, "type", "hvm", **type_attrs)
    if vm.template.kernel:
        _sub(os_el, "kernel", vm.template.kernel)
        if vm.template.initrd:
            _sub(os_el, "initrd", vm.template.initrd)
        cmdline = kernel_cmdline(vm)
        if cmdline:
            _sub(os_el, "cmdline", cmdline)
    else:
        _sub(os_el, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=disk_path)
    _sub(disk, "target", dev="vda", bus="virtio")
    if seed_path:
        # The cloud-init seed: read-only, and left out of snapshots (it never changes).
        seed = _sub(devices, "disk", type="file", device="disk", snapshot="no")
        _sub(seed, "driver", name="qemu", type="raw")
        _sub(seed, "source", file=seed_path)
        _sub(seed, "target", dev="vdb", bus="virtio")
        _sub(seed, "readonly")
    nic = _sub(devices, "interface", type="network")
    _sub(nic, "mac", address=vm.mac)
    _sub(nic, "source", network=network_name)
    _sub(nic, "target", dev=vm.tap)
    _sub(nic, "model", type="virtio")
    serial = _sub(devices, "serial", type="pty")
    if console_log:
        _sub(serial, "log", file=console_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if has_agent_channel(vm):
        # qemu-guest-agent's channel (libvirt picks the socket's path): shutdown, the
        # guest's addresses and fsfreeze go through it when the guest runs the agent.
        agent = _sub(devices, "channel", type="unix")
        _sub(agent, "target", type="virtio", name="org.qemu.guest_agent.0")
    # No USB controller or memory balloon: test guests use neither, and under
    # TCG the controller's polling alone costs CPU that other guests need.
    _sub(devices, "controller", type="usb", model="none")
    _sub(devices, "memballoon", model="none")
    return _tostring(root)


def kernel_cmdline(vm: VmSpec) -> str:
    """The template's kernel command line, with ZERO_FREED_MEMORY for a VM booted to be saved."""
    cmdline = vm.template.cmdline
    if vm.zero_freed_memory and not any(w.startswith("init_on_free=") for w in cmdline.split()):
        cmdline = f"{cmdline} {ZERO_FREED_MEMORY}".strip()
    if vm.machine_id:
        # A clone's disk holds its source's /etc/machine-id: systemd takes this one instead
        # (and commits it), as it would a new one on a first boot. Other inits ignore it.
        cmdline = f"{cmdline} systemd.machine_id={vm.machine_id}".strip()
    return cmdline


def has_agent_channel(vm: VmSpec) -> bool:
    """The guest agent's channel (a virtio-serial controller and port) for a template whose
    guest runs the agent, and for one that boots from its own disk (an operator's image:
    whether it runs one cannot be told); not for a guest that runs none (the busybox one)."""
    return vm.template.guest_agent or not vm.template.kernel


def overlay_volume_xml(name: str, capacity_bytes: int, backing_path: str, backing_format: str) -> str:
    root = ET.Element("volume")
    _sub(root, "name", name)
    _sub(root, "capacity", str(capacity_bytes), unit="bytes")
    target = _sub(root, "target")
    _sub(target, "format", type="qcow2")
    backing = _sub(root, "backingStore")
    _sub(backing, "path", backing_path)
    _sub(backing, "format", type=backing_format)
    return _tostring(root)


def external_snapshot_xml(name: str, active_path: str) -> str:
    """A disk-only external snapshot of the VM's disk (vda) to a new overlay at `active_path`;
    the cloud-init seed (snapshot='no' in the domain) is left out."""
    root = ET.Element("domainsnapshot")
    _sub(root, "name", name)
    _sub(root, "memory", snapshot="no")
    disks = _sub(root, "disks")
    disk = _sub(disks, "disk", name="vda", snapshot="external", type="file")
    _sub(disk, "driver", type="qcow2")
    _sub(disk, "source", file=active_path)
    return _tostring(root)


def with_disk_source(domain: str, path: str) -> str:
    """The domain's definition with its disk (vda) at `path`."""
    root = ET.fromstring(domain)
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        if target is not None and target.get("dev") == "vda":
            disk.find("source").set("file", path)
    return _tostring(root)


def disk_source(domain: str) -> str:
    """The file of the domain's disk (vda)."""
    for disk in ET.fromstring(domain).findall("./devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is not None and target.get("dev") == "vda" and source is not None:
            return source.get("file", "")
    return ""


def dir_pool_xml(name: str, path: str) -> str:
    root = ET.Element("pool", {"type": "dir"})
    _sub(root, "name", name)
    target = _sub(root, "target")
    _sub(target, "path", path)
    return _tostring(root)


def network_xml(name: str, bridge: str, vm_network: str, forward_mode: str) -> str:
    """A bridge with the gateway address; DHCP hands out only per-MAC host entries, and
    answers nobody else (KNOWN_ONLY).

    `open` forward mode adds no firewall rules of libvirt's own: our nftables
    table is the single owner of NAT and egress policy.
    """
    net = ipaddress.IPv4Network(vm_network)
    root = ET.Element("network")
    _sub(root, "name", name)
    _sub(root, "forward", mode=forward_mode)
    _sub(root, "bridge", name=bridge, stp="off", delay="0")
    ip = _sub(root, "ip", address=str(net.network_address + 1), netmask=str(net.netmask))
    dhcp = _sub(ip, "dhcp")
    # The range spans the whole network, not because clients without a host
    # entry should get addresses (they get none: KNOWN_ONLY; every VM has one,
    # for the address its MAC implies) but because libvirt sizes dnsmasq's lease
    # table from the range when the network starts, and without a range writes
    # no DHCP service at all for a network that starts with no host entry.
    _sub(dhcp, "range", start=str(net.network_address + 2), end=str(net.broadcast_address - 1))
    return with_known_only(_tostring(root))


def serves_known_only(xml_desc: str) -> bool:
    """Whether the network's dnsmasq ignores clients without a host entry."""
    return any(option.get("value") == KNOWN_ONLY
               for option in ET.fromstring(xml_desc).iter(f"{{{DNSMASQ_XMLNS}}}option"))


def with_known_only(xml_desc: str) -> str:
    """The network definition, its host entries kept, with KNOWN_ONLY among its dnsmasq options."""
    root = ET.fromstring(xml_desc)
    if not serves_known_only(xml_desc):
        options = root.find(f"{{{DNSMASQ_XMLNS}}}options")
        if options is None:
            options = ET.SubElement(root, f"{{{DNSMASQ_XMLNS}}}options")
        ET.SubElement(options, f"{{{DNSMASQ_XMLNS}}}option", {"value": KNOWN_ONLY})
    return _tostring(root)


def network_is_current(xml_desc: str, vm_network: str) -> bool:
    """False for a network defined by an older version of this code (recreate it)."""
    net = ipaddress.IPv4Network(vm_network)
    rng = ET.fromstring(xml_desc).find("./ip/dhcp/range")
    return rng is not None and rng.get("start") == str(net.network_address + 2)


def dhcp_host_xml(mac: str, ip: str, name: str) -> str:
    host = ET.Element("host", {"mac": mac, "ip": ip, "name": name})
    # Short leases: an address freed by a destroyed VM is soon free for the next one.
    ET.SubElement(host, "lease", {"expiry": str(DHCP_LEASE_MINUTES), "unit": "minutes"})
    return _tostring(host)




def snapshot_xml(name: str, description: str = "") -> str:
    root = ET.Element("domainsnapshot")
    _sub(root, "name", name)
    if description:
        _sub(root, "description", description)
    return _tostring(root)
