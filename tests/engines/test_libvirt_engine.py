"""The libvirt driver and the composite flows of engines/base.py, on libvirt's
in-process test:///default driver, checked against what libvirt itself reports.

No Django models: the driver works from plain VmSpec/TemplateSpec data. The
pool and network names start with "tt-" so the conftest cleanup removes them.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import libvirt
import pytest

from engines.cloudinit import CloudInitSpec
from engines.libvirt import xml
from engines.libvirt.engine import MIB, LibvirtEngine
from engines.network.firewall import MemoryFirewall
from engines.node_options import NodeOptions
from engines.specs import Feature, PortSpec, PowerState, SnapshotSpec, TemplateSpec, VmSpec
from tests.support import TEST_URI
from ttportal.errors import EngineError, ErrorCode

POOL = "tt-unit-pool"
NETWORK = "tt-unit-net"
POOL_PATH = "/tt-unit/pool"  # a path no other test pool uses: dir pools may not share one
TEMPLATE_VOLUME = "tt-unit-template.qcow2"
TEMPLATE_MB = 20


@pytest.fixture
def engine() -> LibvirtEngine:
    eng = LibvirtEngine(
        uri=TEST_URI,
        options=NodeOptions(
            pool_name=POOL, network_name=NETWORK, pool_path=POOL_PATH,
            vm_network="10.200.0.0/16", bridge="ttunit0", stop_timeout=0,
        ),
    )
    eng.init()
    return eng


@pytest.fixture
def template(engine) -> TemplateSpec:
    engine._pool().createXML(
        f"<volume><name>{TEMPLATE_VOLUME}</name><capacity unit='M'>{TEMPLATE_MB}</capacity>"
        "<target><format type='qcow2'/></target></volume>",
        0,
    )
    return TemplateSpec(name="tt/busybox", path=TEMPLATE_VOLUME, size_mb=TEMPLATE_MB)


def make_vm(template: TemplateSpec, n: int = 1, **changes) -> VmSpec:
    vm = VmSpec(
        id=n, name=f"tt-vm-{n}", template=template, cpu_num=2, mem_mb=128, disk_mb=32,
        mac=f"52:54:00:00:01:{n:02x}", ip=f"10.200.1.{n}",
        ports=(PortSpec("tcp", 22, 20000 + n), PortSpec("udp", 53, 20100 + n)),
    )
    return vm.replace(**changes)


# --- what libvirt reports ----------------------------------------------------------


def conn() -> libvirt.virConnect:
    return libvirt.open(TEST_URI)  # the test driver's state is per process: any handle sees it


def domain(vm: VmSpec) -> libvirt.virDomain | None:
    try:
        return conn().lookupByName(vm.name)
    except libvirt.libvirtError:
        return None


def volume(name: str) -> libvirt.virStorageVol | None:
    try:
        return conn().storagePoolLookupByName(POOL).storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def pool_volume_names() -> set[str]:
    return {v.name() for v in conn().storagePoolLookupByName(POOL).listAllVolumes()}


def dhcp_hosts() -> set[tuple[str, str, str]]:
    root = ET.fromstring(conn().networkLookupByName(NETWORK).XMLDesc(0))
    return {(h.get("mac"), h.get("ip"), h.get("name")) for h in root.iter("host")}


def vm_elements(fw: MemoryFirewall, ip: str) -> dict:
    s = fw.state
    return {
        "ports": {k: v for k, v in s.port_map.items() if v[0] == ip},
        "denied": {a for a in s.denied if a == ip},
        "blacklist": {p for p in s.blacklist if p[0] == ip},
    }


# --- the whole life -------------------------------------------------------------------


def test_it_creates_starts_stops_snapshots_applies_and_destroys(engine, template):
    vm = make_vm(template)
    image = engine.create_vm(vm)
    vm = vm.replace(runtime_image=image)

    dom = domain(vm)
    assert dom is not None and not dom.isActive()
    assert engine.power_state(vm) == PowerState.STOPPED
    overlay = volume(LibvirtEngine.image_name(vm))
    assert overlay is not None and overlay.path() == image
    vol_xml = ET.fromstring(overlay.XMLDesc(0))
    template_path = volume(TEMPLATE_VOLUME).path()
    assert vol_xml.findtext("./backingStore/path") == template_path
    assert vol_xml.find("./target/format").get("type") == "qcow2"
    assert overlay.info()[1] == vm.disk_mb * MIB  # capacity honoured, not the template's
    disk_sources = [s.get("file") for s in ET.fromstring(dom.XMLDesc(0)).iter("source") if s.get("file")]
    assert disk_sources == [image]

    engine.start_vm(vm)
    assert domain(vm).isActive()
    assert engine.power_state(vm) == PowerState.RUNNING
    engine.start_vm(vm)  # a running VM is left alone
    assert domain(vm).isActive()

    engine.stop_vm(vm)
    assert not domain(vm).isActive()
    engine.stop_vm(vm)  # a stopped VM is left alone
    assert engine.power_state(vm) == PowerState.STOPPED

    engine.start_vm(vm)
    result = engine.create_snapshot(vm, "s1")
    assert result.path == "s1"
    assert result.meta == vm.to_meta()
    assert domain(vm).snapshotListNames() == ["s1"]
    assert domain(vm).isActive()  # the power state it had is restored

    bigger = vm.replace(cpu_num=4, mem_mb=256)
    engine.update_vm(bigger)
    restored = engine.apply_snapshot(bigger, SnapshotSpec(name="s1", path=result.path, meta=result.meta))
    assert (restored.cpu_num, restored.mem_mb) == (2, 128)
    dom = domain(vm)
    assert dom.isActive()
    dom_xml = ET.fromstring(dom.XMLDesc(0))
    assert dom_xml.findtext("vcpu") == "2"
    assert dom.snapshotListNames() == ["s1"]

    engine.destroy_vm(restored)
    assert domain(vm) is None
    assert volume(LibvirtEngine.image_name(vm)) is None
    assert pool_volume_names() == {TEMPLATE_VOLUME}  # the template itself is untouched
    assert engine.power_state(vm) == PowerState.MISSING


def test_it_takes_a_snapshot_of_a_stopped_vm_and_leaves_it_stopped(engine, template):
    vm = make_vm(template)
    vm = vm.replace(runtime_image=engine.create_vm(vm))
    result = engine.create_snapshot(vm, "cold")
    assert not domain(vm).isActive()
    engine.apply_snapshot(vm, SnapshotSpec(name="cold", path=result.path, meta=result.meta))
    assert not domain(vm).isActive()
    engine.destroy_snapshot(vm, SnapshotSpec(name="cold", path=result.path))
    assert domain(vm).snapshotListNames() == []
    engine.destroy_snapshot(vm, SnapshotSpec(name="cold", path=result.path))  # already gone: fine


class FakeAgent:
    """A guest agent that counts freezes and thaws (the test driver only pretends to freeze)."""

    def __init__(self, monkeypatch, *, answers: bool = True):
        self.calls: list[str] = []
        self.answers = answers
        monkeypatch.setattr(libvirt.virDomain, "fsFreeze", lambda dom, *args: self.freeze())
        monkeypatch.setattr(libvirt.virDomain, "fsThaw", lambda dom, *args: self.thaw())

    def freeze(self) -> int:
        if not self.answers:
            raise libvirt.libvirtError("Guest agent is not responding: QEMU guest agent is not connected")
        self.calls.append("freeze")
        return 1

    def thaw(self) -> int:
        self.calls.append("thaw")
        return 1


def test_it_snapshots_a_running_vm_live_with_its_filesystems_frozen(engine, template, monkeypatch):
    agent = FakeAgent(monkeypatch)
    vm = make_vm(template)
    vm = vm.replace(runtime_image=engine.create_vm(vm))
    engine.start_vm(vm)
    monkeypatch.setattr(engine, "stop_vm", boom)  # the live path never stops it
    said = []
    result = engine.create_snapshot(vm, "live", lambda pct, msg: said.append(msg))
    assert domain(vm).isActive() and domain(vm).snapshotListNames() == ["live"]
    assert agent.calls[-2:] == ["freeze", "thaw"]
    assert "snapshot taken live: filesystems frozen by the guest agent, then thawed" in said
    assert result.path == "live"


def test_it_thaws_the_guest_when_the_live_snapshot_fails(engine, template, monkeypatch):
    agent = FakeAgent(monkeypatch)
    vm = make_vm(template)
    vm = vm.replace(runtime_image=engine.create_vm(vm))
    engine.start_vm(vm)
    monkeypatch.setattr(libvirt.virDomain, "snapshotCreateXML", boom)
    with pytest.raises(EngineError) as exc:
        engine.create_snapshot(vm, "live")
    assert exc.value.code == ErrorCode.SNAPSHOT_CREATE
    assert agent.calls[-2:] == ["freeze", "thaw"] and domain(vm).isActive()


def test_it_stops_a_vm_whose_agent_does_not_answer_and_says_so(engine, template, monkeypatch):
    FakeAgent(monkeypatch, answers=False)
    vm = make_vm(template)
    vm = vm.replace(runtime_image=engine.create_vm(vm))
    engine.start_vm(vm)
    said = []
    engine.create_snapshot(vm, "cold", lambda pct, msg: said.append(msg))
    assert "no guest agent answered: stopping the VM for a consistent snapshot" in said
    assert "snapshotting storage (VM stopped)" in said
    assert domain(vm).isActive()  # started again, as it was


@pytest.mark.parametrize(("agent_answers", "asked"), [
    (True, ["guest agent"]),
    (False, ["guest agent", "ACPI power button"]),
])
def test_it_asks_the_guest_agent_before_the_acpi_button_then_forces(engine, template, monkeypatch,
                                                                     agent_answers, asked):
    flags = {libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT: "guest agent",
             libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN: "ACPI power button"}
    tried = []

    def shutdown_flags(dom, flag):
        tried.append(flags[flag])
        if flag == libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT and not agent_answers:
            raise libvirt.libvirtError("QEMU guest agent is not connected")
        return 0  # accepted, but this guest never powers off: it is forced off

    monkeypatch.setattr(libvirt.virDomain, "shutdownFlags", shutdown_flags)
    monkeypatch.setattr(engine, "stop_timeout", 0.2)
    vm = make_vm(template)
    vm = vm.replace(runtime_image=engine.create_vm(vm))
    engine.start_vm(vm)
    engine.stop_vm(vm)
    assert tried == asked
    assert not domain(vm).isActive()


def test_it_keeps_the_image_when_asked(engine, template):
    vm = make_vm(template, keep_image=True)
    vm = vm.replace(runtime_image=engine.create_vm(vm))
    engine.start_vm(vm)
    engine.destroy_vm(vm)
    assert domain(vm) is None
    kept = volume(LibvirtEngine.image_name(vm))
    assert kept is not None and kept.path() == vm.runtime_image
    assert (vm.mac, vm.ip, vm.name) not in dhcp_hosts()


def test_it_destroys_twice_without_complaint(engine, template):
    vm = make_vm(template)
    vm = vm.replace(runtime_image=engine.create_vm(vm))
    engine.start_vm(vm)
    engine.destroy_vm(vm)
    engine.destroy_vm(vm)
    assert domain(vm) is None
    assert volume(LibvirtEngine.image_name(vm)) is None


def test_it_destroys_a_vm_that_never_existed(engine, template):
    engine.destroy_vm(make_vm(template, 9))
    assert pool_volume_names() == {TEMPLATE_VOLUME}


@pytest.mark.parametrize("uuid", ["", "6f1c1b1e-8a43-4d0e-9d3b-0c1c2d3e4f50"])
def test_it_creates_again_when_a_task_is_retried(engine, template, uuid):
    # A worker that died half-way leaves the VM "creating"; the retry runs create_vm again.
    vm = make_vm(template, uuid=uuid)
    first = engine.create_vm(vm)
    dom_uuid = domain(vm).UUIDString()
    again = engine.create_vm(vm)
    assert again == first
    assert domain(vm).UUIDString() == dom_uuid
    assert [d.name() for d in conn().listAllDomains() if d.name().startswith("tt-vm-")] == [vm.name]
    assert pool_volume_names() == {TEMPLATE_VOLUME, LibvirtEngine.image_name(vm)}
    assert dhcp_hosts() == {(vm.mac, vm.ip, vm.name)}


# --- storage ---------------------------------------------------------------------------


def test_it_refuses_a_disk_smaller_than_the_template(engine, template):
    vm = make_vm(template, disk_mb=TEMPLATE_MB - 1)
    with pytest.raises(EngineError) as exc:
        engine.create_vm(vm)
    assert exc.value.code == ErrorCode.STORAGE_CREATE_IMAGE
    assert "smaller than template" in exc.value.message
    assert domain(vm) is None
    assert pool_volume_names() == {TEMPLATE_VOLUME}
    assert dhcp_hosts() == set()
    assert engine.firewall.state.port_map == {}


def test_it_accepts_a_disk_exactly_the_templates_size(engine, template):
    vm = make_vm(template, disk_mb=TEMPLATE_MB)
    engine.create_vm(vm)
    assert volume(LibvirtEngine.image_name(vm)).info()[1] == TEMPLATE_MB * MIB


def test_it_creates_the_image_idempotently(engine, template):
    vm = make_vm(template)
    first = engine.create_image(vm)
    again = engine.create_image(vm)  # a retried task
    assert first == again
    assert pool_volume_names() == {TEMPLATE_VOLUME, LibvirtEngine.image_name(vm)}
    engine.destroy_image(vm)
    engine.destroy_image(vm)
    assert pool_volume_names() == {TEMPLATE_VOLUME}


def test_it_finds_the_template_by_absolute_path(engine, template):
    by_path = TemplateSpec(name=template.name, path=volume(TEMPLATE_VOLUME).path())
    vm = make_vm(by_path)
    image = engine.create_image(vm)
    backing = ET.fromstring(volume(LibvirtEngine.image_name(vm)).XMLDesc(0)).findtext("./backingStore/path")
    assert image.endswith(LibvirtEngine.image_name(vm))
    assert backing == by_path.path


def test_it_reports_a_missing_template_as_an_image_error(engine, template):
    vm = make_vm(dataclasses.replace(template, path="no-such.qcow2"))
    with pytest.raises(EngineError) as exc:
        engine.create_vm(vm)
    assert exc.value.code == ErrorCode.STORAGE_CREATE_IMAGE
    assert domain(vm) is None
    assert pool_volume_names() == {TEMPLATE_VOLUME}


# --- roll-back of a failed create ---------------------------------------------------


def boom(*args, **kwargs):
    raise RuntimeError("injected failure")


def assert_nothing_left(engine: LibvirtEngine, vm: VmSpec) -> None:
    assert domain(vm) is None
    assert pool_volume_names() == {TEMPLATE_VOLUME}
    assert dhcp_hosts() == set()
    assert vm_elements(engine.firewall, vm.ip) == {"ports": {}, "denied": set(), "blacklist": set()}


def failed_create(monkeypatch, engine: LibvirtEngine, vm: VmSpec, *failing: tuple) -> EngineError:
    """Create `vm` with each (object, method name) in `failing` made to raise: the EngineError it gives."""
    for obj, name in failing:
        monkeypatch.setattr(obj, name, boom)
    with pytest.raises(EngineError) as exc:
        engine.create_vm(vm)
    return exc.value


def test_it_rolls_back_when_defining_the_vm_fails(engine, template, monkeypatch):
    vm = make_vm(template)
    error = failed_create(monkeypatch, engine, vm, (engine, "define_vm"))
    assert error.code == ErrorCode.DEFINE_VM
    assert "injected failure" in error.message
    assert_nothing_left(engine, vm)


def test_it_rolls_back_when_wiring_the_network_fails(engine, template, monkeypatch):
    vm = make_vm(template)
    error = failed_create(monkeypatch, engine, vm, (engine, "set_net"))
    assert error.code == ErrorCode.FIREWALL_SET_NET
    assert_nothing_left(engine, vm)


def test_it_rolls_back_a_half_wired_network(engine, template, monkeypatch):
    # The DHCP entry is in place when the firewall refuses: it must go too.
    vm = make_vm(template)
    error = failed_create(monkeypatch, engine, vm, (engine.firewall, "add_vm"))
    assert error.code == ErrorCode.FIREWALL_SET_NET
    assert_nothing_left(engine, vm)


def test_it_rolls_back_when_denying_egress_fails(engine, template, monkeypatch):
    vm = make_vm(template, deny_outgoing=True, blacklist=("198.18.0.1",))
    error = failed_create(monkeypatch, engine, vm, (engine, "deny_outgoing"))
    assert error.code == ErrorCode.FIREWALL_SET_NET
    assert_nothing_left(engine, vm)


def test_it_leaves_other_vms_alone_when_a_create_fails(engine, template, monkeypatch):
    other = make_vm(template, 2)
    engine.create_vm(other)
    before = vm_elements(engine.firewall, other.ip)
    failed_create(monkeypatch, engine, make_vm(template, 3), (engine, "define_vm"))
    assert domain(other) is not None
    assert pool_volume_names() == {TEMPLATE_VOLUME, LibvirtEngine.image_name(other)}
    assert dhcp_hosts() == {(other.mac, other.ip, other.name)}
    assert vm_elements(engine.firewall, other.ip) == before


def test_it_keeps_undoing_when_one_undo_step_fails(engine, template, monkeypatch):
    vm = make_vm(template)
    error = failed_create(monkeypatch, engine, vm, (engine, "set_net"), (engine, "undefine_vm"))
    assert error.code == ErrorCode.FIREWALL_SET_NET  # the original failure, not the undo's
    assert pool_volume_names() == {TEMPLATE_VOLUME}  # the image went all the same


def test_it_removes_a_kept_image_when_create_fails(engine, template, monkeypatch):
    # keep_image is about destroying a VM that ran, not about a create that never finished.
    failed_create(monkeypatch, engine, make_vm(template, keep_image=True), (engine, "define_vm"))
    assert pool_volume_names() == {TEMPLATE_VOLUME}


def test_it_reports_the_progress_of_a_create(engine, template):
    seen = []
    engine.create_vm(make_vm(template), lambda pct, msg: seen.append(pct))
    assert seen == sorted(seen) and seen


# --- network: DHCP and firewall ------------------------------------------------------


def test_it_adds_and_removes_the_dhcp_host_entry(engine, template):
    vm = make_vm(template)
    vm = vm.replace(runtime_image=engine.create_vm(vm))
    assert dhcp_hosts() == {(vm.mac, vm.ip, vm.name)}
    engine.set_net(vm)  # again: no duplicate entry, no error
    assert dhcp_hosts() == {(vm.mac, vm.ip, vm.name)}
    engine.destroy_vm(vm)
    assert dhcp_hosts() == set()
    engine.unset_net(vm)  # again: fine
    assert dhcp_hosts() == set()


def test_it_keeps_one_dhcp_entry_per_vm(engine, template):
    a, b = make_vm(template, 1), make_vm(template, 2)
    for vm in (a, b):
        engine.create_vm(vm)
    assert dhcp_hosts() == {(a.mac, a.ip, a.name), (b.mac, b.ip, b.name)}
    engine.destroy_vm(a)
    assert dhcp_hosts() == {(b.mac, b.ip, b.name)}


def test_it_replaces_a_stale_entry_of_the_vms_name_or_address(engine, template):
    # A step cut short can leave an entry of this VM's name (or address) with another MAC;
    # libvirt refuses to add one that matches an existing entry by MAC, name or IP.
    vm = make_vm(template)
    engine.set_reservation("52:54:00:00:0f:0f", "10.200.1.99", vm.name, present=True)
    engine.set_reservation("52:54:00:00:0f:0e", vm.ip, "tt-vm-old", present=True)
    engine.create_vm(vm)
    assert dhcp_hosts() == {(vm.mac, vm.ip, vm.name)}
    assert engine.inventory("tt-vm-").reservations == {vm.mac: vm.ip}


def test_it_puts_exactly_the_vms_elements_in_the_firewall(engine, template):
    vm = make_vm(template, blacklist=("198.18.0.1", "198.18.0.2"))
    engine.set_net(vm)
    assert engine.firewall.state.port_map == {
        ("tcp", 20001): (vm.ip, 22),
        ("udp", 20101): (vm.ip, 53),
    }
    assert engine.firewall.state.denied == set()
    assert engine.firewall.state.blacklist == {(vm.ip, "198.18.0.1"), (vm.ip, "198.18.0.2")}
    engine.unset_net(vm)
    assert engine.firewall.state.port_map == {}
    assert engine.firewall.state.denied == set()
    assert engine.firewall.state.blacklist == set()


def test_it_changes_only_that_vms_egress_and_blacklist(engine, template):
    a = make_vm(template, 1)
    b = make_vm(template, 2, deny_outgoing=True, blacklist=("198.18.0.9",))
    engine.create_vm(a)
    engine.create_vm(b)
    fw = engine.firewall
    b_before = vm_elements(fw, b.ip)
    assert b_before["denied"] == {b.ip}

    engine.deny_outgoing(a)
    assert fw.state.denied == {a.ip, b.ip}
    assert vm_elements(fw, a.ip)["ports"] == {("tcp", 20001): (a.ip, 22), ("udp", 20101): (a.ip, 53)}
    assert vm_elements(fw, b.ip) == b_before

    engine.set_blacklist(a.replace(deny_outgoing=True, blacklist=("198.18.0.1",)))
    assert vm_elements(fw, a.ip)["blacklist"] == {(a.ip, "198.18.0.1")}
    assert vm_elements(fw, a.ip)["denied"] == {a.ip}
    engine.set_blacklist(a.replace(deny_outgoing=True, blacklist=("198.18.0.2", "198.18.0.3")))
    assert vm_elements(fw, a.ip)["blacklist"] == {(a.ip, "198.18.0.2"), (a.ip, "198.18.0.3")}
    assert vm_elements(fw, b.ip) == b_before

    engine.allow_outgoing(a.replace(blacklist=("198.18.0.2", "198.18.0.3")))
    assert vm_elements(fw, a.ip)["denied"] == set()
    assert vm_elements(fw, a.ip)["blacklist"] == {(a.ip, "198.18.0.2"), (a.ip, "198.18.0.3")}
    engine.set_blacklist(a)  # an empty blacklist clears it
    assert vm_elements(fw, a.ip)["blacklist"] == set()
    assert vm_elements(fw, b.ip) == b_before

    engine.destroy_vm(a)
    assert vm_elements(fw, a.ip) == {"ports": {}, "denied": set(), "blacklist": set()}
    assert vm_elements(fw, b.ip) == b_before


def test_it_denies_egress_and_sets_the_blacklist_during_create(engine, template):
    vm = make_vm(template, deny_outgoing=True, blacklist=("198.18.0.1",))
    engine.create_vm(vm)
    assert vm_elements(engine.firewall, vm.ip) == {
        "ports": {("tcp", 20001): (vm.ip, 22), ("udp", 20101): (vm.ip, 53)},
        "denied": {vm.ip},
        "blacklist": {(vm.ip, "198.18.0.1")},
    }


# --- domain XML --------------------------------------------------------------------------


def test_it_builds_domain_xml_with_the_vms_resources(template):
    vm = make_vm(template, uuid="6f1c1b1e-8a43-4d0e-9d3b-0c1c2d3e4f50")
    root = ET.fromstring(
        xml.domain_xml(vm, domain_type="qemu", disk_path="/pool/tt-vm-1.qcow2",
                       network_name="tt-net", console_log="/var/log/tt-vm-1.log", arch="x86_64")
    )
    assert root.tag == "domain" and root.get("type") == "qemu"
    assert root.findtext("name") == "tt-vm-1"
    assert root.findtext("uuid") == vm.uuid
    assert root.findtext("vcpu") == "2"
    assert root.find("memory").text == "128" and root.find("memory").get("unit") == "MiB"
    assert root.find("./os/type").get("arch") == "x86_64"
    assert root.find("./os/boot").get("dev") == "hd"
    assert root.find("./os/kernel") is None
    disk = root.find("./devices/disk")
    assert disk.find("source").get("file") == "/pool/tt-vm-1.qcow2"
    assert disk.find("driver").get("type") == "qcow2"
    nic = root.find("./devices/interface")
    assert nic.get("type") == "network"
    assert nic.find("mac").get("address") == vm.mac
    assert nic.find("source").get("network") == "tt-net"
    assert root.find("./devices/serial/log").get("file") == "/var/log/tt-vm-1.log"


def test_it_builds_domain_xml_for_direct_kernel_boot(template):
    kernel_tpl = TemplateSpec(
        name="tt/kernel", path=TEMPLATE_VOLUME, kernel="/boot/vmlinuz", initrd="/boot/initrd.img",
        cmdline="console=ttyS0 root=/dev/vda rw & quiet",
    )
    vm = make_vm(kernel_tpl)
    root = ET.fromstring(xml.domain_xml(vm, domain_type="test", disk_path="/p/x.qcow2", network_name="n"))
    assert root.findtext("./os/kernel") == "/boot/vmlinuz"
    assert root.findtext("./os/initrd") == "/boot/initrd.img"
    assert root.findtext("./os/cmdline") == "console=ttyS0 root=/dev/vda rw & quiet"  # escaped, round-trips
    assert root.find("./os/boot") is None
    assert root.find("uuid") is None  # none asked: libvirt picks one
    assert root.find("./os/type").get("arch") is None


def agent_channels(root: ET.Element) -> list[str]:
    return [c.find("target").get("name") for c in root.iterfind("./devices/channel")]


def test_a_guest_zeroes_freed_memory_only_when_it_is_to_be_saved(template):
    kernel_tpl = TemplateSpec(name="tt/kernel", path=TEMPLATE_VOLUME, kernel="/boot/vmlinuz",
                              cmdline="console=ttyS0 quiet")

    def cmdline(vm: VmSpec) -> str:
        root = ET.fromstring(xml.domain_xml(vm, domain_type="test", disk_path="/p/x.qcow2", network_name="n"))
        return root.findtext("./os/cmdline")

    assert cmdline(make_vm(kernel_tpl)) == "console=ttyS0 quiet"  # a cold boot pays no zeroing
    assert cmdline(make_vm(kernel_tpl, zero_freed_memory=True)) == "console=ttyS0 quiet init_on_free=1"
    # A template that asks for it itself keeps its own word, once.
    own = dataclasses.replace(kernel_tpl, cmdline="console=ttyS0 init_on_free=1")
    assert cmdline(make_vm(own, zero_freed_memory=True)) == "console=ttyS0 init_on_free=1"
    assert cmdline(make_vm(own)) == "console=ttyS0 init_on_free=1"


def test_only_a_guest_that_may_run_the_agent_gets_its_channel(template):
    def channels(tpl: TemplateSpec) -> list[str]:
        vm = make_vm(tpl)
        return agent_channels(ET.fromstring(
            xml.domain_xml(vm, domain_type="test", disk_path="/p/x.qcow2", network_name="n")))

    kernel_tpl = TemplateSpec(name="tt/kernel", path=TEMPLATE_VOLUME, kernel="/boot/vmlinuz", cmdline="quiet")
    assert channels(kernel_tpl) == []  # the busybox guest: no agent, no virtio-serial device
    assert channels(dataclasses.replace(kernel_tpl, guest_agent=True)) == ["org.qemu.guest_agent.0"]
    # An image that boots itself (an operator's) may run one: it keeps the channel.
    assert channels(TemplateSpec(name="acme/app", path=TEMPLATE_VOLUME)) == ["org.qemu.guest_agent.0"]


def test_it_defines_the_domain_libvirt_reports_back(engine, template):
    kernel_tpl = TemplateSpec(name="tt/kernel", path=TEMPLATE_VOLUME, size_mb=TEMPLATE_MB,
                              kernel="/boot/vmlinuz", initrd="/boot/initrd.img", cmdline="console=ttyS0")
    vm = make_vm(kernel_tpl, cpu_num=3, mem_mb=300, uuid="6f1c1b1e-8a43-4d0e-9d3b-0c1c2d3e4f50")
    image = engine.create_vm(vm)
    root = ET.fromstring(domain(vm).XMLDesc(0))
    assert root.findtext("uuid") == vm.uuid
    assert root.findtext("vcpu") == "3"
    assert int(root.findtext("memory")) == 300 * 1024  # libvirt reports KiB
    assert root.findtext("./os/kernel") == "/boot/vmlinuz"
    assert root.findtext("./os/initrd") == "/boot/initrd.img"
    assert root.findtext("./os/cmdline") == "console=ttyS0"
    assert root.find("./devices/disk/source").get("file") == image
    assert root.find("./devices/interface/mac").get("address") == vm.mac
    assert root.find("./devices/interface/source").get("network") == NETWORK


def test_it_updates_the_defined_vm(engine, template):
    vm = make_vm(template)
    vm = vm.replace(runtime_image=engine.create_vm(vm))
    assert vm.uuid == ""  # no rand_uuid: libvirt picked one, and a redefinition must keep it
    uuid = domain(vm).UUIDString()
    engine.update_vm(vm.replace(cpu_num=4, mem_mb=512))
    assert domain(vm).UUIDString() == uuid
    root = ET.fromstring(domain(vm).XMLDesc(0))
    assert root.findtext("vcpu") == "4"
    assert int(root.findtext("memory")) == 512 * 1024


# --- features and init -----------------------------------------------------------------


def test_it_reports_missing_features(engine):
    assert engine.check_feat(set(Feature)) == set()
    assert engine.check_feat(set()) == set()

    class NoSnapshots(LibvirtEngine):
        features = LibvirtEngine.features - {Feature.SNAPSHOT, Feature.FLAT}

    lesser = NoSnapshots(uri=TEST_URI, options=NodeOptions(pool_name=POOL, network_name=NETWORK))
    assert lesser.check_feat({Feature.SNAPSHOT, Feature.NAT}) == {Feature.SNAPSHOT}
    assert lesser.check_feat(set(Feature)) == {Feature.SNAPSHOT, Feature.FLAT}


def test_it_initialises_idempotently(engine):
    engine.init()
    engine.init()
    assert conn().storagePoolLookupByName(POOL).isActive()
    net = conn().networkLookupByName(NETWORK)
    assert net.isActive()
    ip = ET.fromstring(net.XMLDesc(0)).find("ip")
    assert (ip.get("address"), ip.get("netmask")) == ("10.200.0.1", "255.255.0.0")


def test_it_raises_engine_init_for_an_unreachable_uri():
    eng = LibvirtEngine(uri="test:///no/such/file.xml", options=NodeOptions(pool_name=POOL))
    with pytest.raises(EngineError) as exc:
        eng.init()
    assert exc.value.code == ErrorCode.ENGINE_INIT


def test_it_uses_the_test_domain_type_on_the_test_driver(engine):
    assert engine.domain_type() == "test"


def test_it_names_each_vms_port_after_its_node_and_id():
    from engines.specs import port_prefix, tap_name

    ids = (1, 2, 36**8 - 1)
    names = {tap_name(f"tt-{node}-{vm_id}") for node in ("local", "itest", "bench") for vm_id in ids}
    assert len(names) == 9 and all(len(name) <= 15 for name in names)  # unique; the kernel's limit
    assert tap_name("tt-local-36").startswith(port_prefix("tt-local"))
    assert not tap_name("tt-local-36").startswith(port_prefix("tt-itest"))
    assert tap_name("tt-my-node-2") == port_prefix("tt-my-node") + "2"  # node names may hold dashes


# --- the cloud-init seed -------------------------------------------------------------------


def with_seed(vm: VmSpec) -> VmSpec:
    seed = CloudInitSpec(hostname="web", instance_id=f"{vm.name}-1", ssh_keys=("ssh-ed25519 AAAA x",))
    return vm.replace(template=dataclasses.replace(vm.template, cloud_init=True), cloud_init=seed)


def test_it_gives_a_cloud_init_vm_its_seed_and_the_agent_channel(engine, template):
    vm = with_seed(make_vm(template))
    engine.create_vm(vm)
    seed = LibvirtEngine.seed_name(vm)
    assert pool_volume_names() == {TEMPLATE_VOLUME, LibvirtEngine.image_name(vm), seed}
    devices = ET.fromstring(domain(vm).XMLDesc(0)).find("devices")
    (seed_disk,) = [d for d in devices.iterfind("disk") if d.find("target").get("dev") == "vdb"]
    assert seed_disk.find("source").get("file") == volume(seed).path()
    assert seed_disk.find("readonly") is not None  # and so left out of snapshots
    channels = [c.find("target").get("name") for c in devices.iterfind("channel")]
    assert channels == ["org.qemu.guest_agent.0"]
    assert engine.inventory("tt-vm-").images == {LibvirtEngine.image_name(vm): vm.name, seed: vm.name}

    engine.destroy_vm(vm.replace(keep_image=True))  # a kept disk; the seed never is
    assert pool_volume_names() == {TEMPLATE_VOLUME, LibvirtEngine.image_name(vm)}


def test_it_writes_the_seed_afresh_when_a_create_is_retried(engine, template):
    vm = with_seed(make_vm(template))
    engine.create_vm(vm)
    engine.create_vm(vm)
    assert pool_volume_names() == {TEMPLATE_VOLUME, LibvirtEngine.image_name(vm), LibvirtEngine.seed_name(vm)}


def test_it_leaves_no_seed_when_a_create_fails(engine, template, monkeypatch):
    vm = with_seed(make_vm(template))
    failed_create(monkeypatch, engine, vm, (engine, "set_net"))
    assert_nothing_left(engine, vm)


def test_a_vm_without_cloud_init_gets_no_seed_disk(engine, template):
    vm = make_vm(template)
    engine.create_vm(vm)
    assert pool_volume_names() == {TEMPLATE_VOLUME, LibvirtEngine.image_name(vm)}
    disks = ET.fromstring(domain(vm).XMLDesc(0)).find("devices").findall("disk")
    assert [d.find("target").get("dev") for d in disks] == ["vda"]


class BusyPool:
    """A storage pool as libvirt answers while another volume's upload runs in it: a refresh
    is refused `busy` times, then done."""

    BUSY = "internal error: pool 'p' has asynchronous jobs running."

    def __init__(self, busy: int, message: str = BUSY) -> None:
        self.busy, self.message, self.refreshes = busy, message, 0

    def refresh(self, flags: int) -> int:
        self.refreshes += 1
        if self.refreshes <= self.busy:
            raise libvirt.libvirtError(self.message)
        return 0


def test_a_pool_refresh_waits_out_another_volume_s_upload(engine, monkeypatch):
    # Two VMs of one create write their seeds side by side: libvirt refuses the refresh of
    # the one that finishes first while the other's upload runs (seen in CI, a clone of 2).
    pool = BusyPool(busy=3)
    monkeypatch.setattr(engine, "_pool", lambda: pool)
    assert engine._refresh_pool() is pool
    assert pool.refreshes == 4


def test_a_pool_refresh_refused_for_another_reason_fails_at_once(engine, monkeypatch):
    pool = BusyPool(busy=1, message="storage pool 'p' is not active")
    monkeypatch.setattr(engine, "_pool", lambda: pool)
    with pytest.raises(libvirt.libvirtError, match="not active"):
        engine._refresh_pool()
    assert pool.refreshes == 1


def test_a_pool_busy_for_too_long_fails_with_libvirt_s_word(engine, monkeypatch):
    monkeypatch.setattr("engines.libvirt.engine.POOL_BUSY_WAIT_S", 0.2)
    pool = BusyPool(busy=10**6)
    monkeypatch.setattr(engine, "_pool", lambda: pool)
    with pytest.raises(libvirt.libvirtError, match="asynchronous jobs running"):
        engine._refresh_pool()
    assert pool.refreshes > 1
