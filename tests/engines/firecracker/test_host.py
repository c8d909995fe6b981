"""What a host needs to run Firecracker VMs, as health() and check_host() report it; the
host-network commands the driver would run; and the driver's modules without Django."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engines import kvm
from engines.firecracker import host
from engines.firecracker.engine import FirecrackerEngine
from engines.firecracker.host import HostNotReady, check_host
from engines.firecracker.hostnet import HostNetwork
from engines.node_options import NodeOptions
from tests.engines.test_no_django import BLOCK_DJANGO, ROOT

KVM_OK = None


@pytest.fixture
def kvm_usable(monkeypatch):
    monkeypatch.setattr(host, "kvm_problem", lambda: KVM_OK)


def engine_for(binary: str, jailer: str = "") -> FirecrackerEngine:
    return FirecrackerEngine(uri="firecracker:///", options=NodeOptions(binary=binary, jailer=jailer))


def test_it_reports_a_usable_host_with_the_firecracker_version(fake_host, kvm_usable):
    assert engine_for(fake_host.firecracker).health() == (True, "firecracker v1.16.1, KVM")
    assert engine_for(fake_host.firecracker, fake_host.jailer).health() == (
        True, "firecracker v1.16.1, jailer v1.16.1, KVM",
    )


def test_it_reports_a_missing_binary(fake_host, kvm_usable, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_host.root))  # no firecracker on it
    assert engine_for("").health() == (
        False, "the firecracker binary firecracker (on PATH) is not found or not executable",
    )
    monkeypatch.setenv("PATH", str(fake_host.bin_dir))
    assert engine_for("").health() == (True, "firecracker v1.16.1, KVM")


def test_it_reports_a_binary_that_is_no_firecracker(fake_host, kvm_usable):
    assert engine_for("/bin/true").health() == (False, "/bin/true --version does not answer like firecracker")


def test_it_reports_no_kvm_from_what_the_host_says(fake_host, monkeypatch):
    monkeypatch.setattr(host, "kvm_problem", lambda: "/dev/kvm is missing (no kvm module loaded)")
    usable, said = engine_for(fake_host.firecracker).health()
    assert not usable and said == "no usable KVM: /dev/kvm is missing (no kvm module loaded)"


def test_it_tells_kvm_from_the_cpu_flags_and_dev_kvm(tmp_path):
    dev, cpuinfo = tmp_path / "kvm", tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu vme de pse tsc msr pae\n")
    assert "missing" in kvm.kvm_problem(str(dev), str(cpuinfo))
    dev.write_bytes(b"")
    assert "no vmx or svm flag" in kvm.kvm_problem(str(dev), str(cpuinfo))
    cpuinfo.write_text("flags\t\t: fpu vme de pse tsc msr pae vmx\n")
    assert kvm.kvm_problem(str(dev), str(cpuinfo)) is None


def test_check_host_refuses_a_node_naming_all_it_lacks(fake_host, monkeypatch):
    monkeypatch.setattr(host, "kvm_problem", lambda: "/dev/kvm is missing")
    with pytest.raises(HostNotReady) as refused:
        check_host(str(fake_host.root / "firecracker"), "/no/jailer")
    said = str(refused.value)
    assert "no usable KVM: /dev/kvm is missing" in said
    assert f"the firecracker binary {fake_host.root}/firecracker is not found" in said
    assert "the jailer binary /no/jailer is not found" in said


def test_check_host_accepts_a_ready_node(fake_host, kvm_usable, monkeypatch):
    monkeypatch.setattr(host.os, "geteuid", lambda: 0)
    monkeypatch.setattr(host.shutil, "which", lambda name: f"/usr/bin/{name}")  # ip and cp
    check_host(fake_host.firecracker, fake_host.jailer)
    monkeypatch.setattr(host.os, "geteuid", lambda: 1000)
    with pytest.raises(HostNotReady, match="must run as root"):
        check_host(fake_host.firecracker, fake_host.jailer)


class RecordingIp(HostNetwork):
    """The real HostNetwork's decisions, with `ip` recorded instead of run."""

    def __init__(self, links: set[str], addresses: str = ""):
        self.links, self.addresses, self.ran = links, addresses, []

    def has_link(self, name: str) -> bool:
        return name in self.links

    def _ip(self, *args: str) -> str:
        self.ran.append(" ".join(args))
        return self.addresses if args[:2] == ("-o", "-4") else ""


def test_it_makes_the_bridge_with_the_gateway_address_once():
    fresh = RecordingIp(set())
    fresh.ensure_bridge("ttbr9", "10.100.0.1/16")
    assert fresh.ran == [
        "link add name ttbr9 type bridge", "-o -4 addr show dev ttbr9",
        "addr add 10.100.0.1/16 dev ttbr9", "link set ttbr9 up",
    ]
    there = RecordingIp({"ttbr9"}, "5: ttbr9    inet 10.100.0.1/16 brd 10.100.255.255 scope global ttbr9\n")
    there.ensure_bridge("ttbr9", "10.100.0.1/16")
    assert there.ran == ["-o -4 addr show dev ttbr9", "link set ttbr9 up"]


def test_it_puts_a_tap_on_the_bridge_and_removes_it():
    net = RecordingIp({"tab12cd4"})
    net.add_tap("tab12cd4", "ttbr9")  # a leftover of that name goes first
    assert net.ran == ["link del tab12cd4", "tuntap add dev tab12cd4 mode tap",
                       "link set tab12cd4 master ttbr9", "link set tab12cd4 up"]
    gone = RecordingIp(set())
    gone.remove_tap("tab12cd4")
    assert gone.ran == []


def test_it_imports_the_firecracker_driver_with_django_blocked():
    modules = [f"engines.firecracker.{m}" for m in
               ("engine", "api", "schemas", "process", "hostnet", "jail", "layout", "files", "host")]
    modules.append("engines.kvm")
    result = subprocess.run([sys.executable, "-c", BLOCK_DJANGO, *modules], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {len(modules)}"
