"""The libvirt engine's names for a VM's disk after cuts (cloning), as reconciliation reads them."""

from __future__ import annotations

from engines.libvirt import xml
from engines.libvirt.engine import LibvirtEngine, _owner_of
from engines.specs import TemplateSpec, VmSpec

TEMPLATE = TemplateSpec(name="tt/busybox", path="t.qcow2", kernel="vmlinuz", cmdline="console=ttyS0")


def spec(runtime_image: str = "", **extra) -> VmSpec:
    return VmSpec(id=7, name="tt-n1-7", template=TEMPLATE, cpu_num=1, mem_mb=128, disk_mb=64, mac="", ip="",
                  runtime_image=runtime_image, **extra)


def test_each_cut_names_the_next_generation():
    assert LibvirtEngine.next_generation(spec("/pool/tt-n1-7.qcow2")) == "tt-n1-7.g1.qcow2"
    assert LibvirtEngine.next_generation(spec("/pool/tt-n1-7.g1.qcow2")) == "tt-n1-7.g2.qcow2"
    assert LibvirtEngine.next_generation(spec("/pool/tt-n1-7.g9.qcow2")) == "tt-n1-7.g10.qcow2"


def test_every_generation_and_the_seed_belong_to_their_vm():
    for volume in ("tt-n1-7.qcow2", "tt-n1-7.g1.qcow2", "tt-n1-7.g12.qcow2", "tt-n1-7-seed.img"):
        assert _owner_of(volume) == "tt-n1-7"
    assert _owner_of("tt-n1-7.gx.qcow2") == "tt-n1-7.gx"  # not a generation: nobody's, as before


def test_only_a_clone_is_told_its_machine_id():
    assert "machine_id" not in xml.kernel_cmdline(spec())
    line = xml.kernel_cmdline(spec(machine_id="0123456789abcdef0123456789abcdef"))
    assert line == "console=ttyS0 systemd.machine_id=0123456789abcdef0123456789abcdef"


def test_the_cut_snapshot_and_the_new_disk_source():
    snap = xml.external_snapshot_xml("cut-1", "/pool/tt-n1-7.g1.qcow2")
    assert 'snapshot="external"' in snap.replace("'", '"') and "/pool/tt-n1-7.g1.qcow2" in snap
    assert "<memory snapshot=" in snap
    domain = xml.domain_xml(spec("/pool/tt-n1-7.qcow2"), domain_type="test", disk_path="/pool/tt-n1-7.qcow2",
                            network_name="net", seed_path="/pool/tt-n1-7-seed.img")
    moved = xml.with_disk_source(domain, "/pool/tt-n1-7.g1.qcow2")
    assert xml.disk_source(moved) == "/pool/tt-n1-7.g1.qcow2"
    assert "/pool/tt-n1-7-seed.img" in moved  # the seed stays where it is
