"""Parked restores (engines/libvirt/parking.py): the holder's pipe protocol against a
stand-in for libvirt's restore that reads the pipe as libvirt and QEMU do (header and XML,
then the stream), and the engine's bookkeeping around it. The real thing (QEMU launched
ahead, fed at a create) is tests/integration/test_warm.py's."""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import libvirt
import pytest

from engines.libvirt import host, parking
from engines.libvirt.engine import LibvirtEngine
from engines.node_options import NodeOptions
from engines.specs import TemplateSpec, VmSpec

NAME = "tt-unit-7"


def save_image(path: Path, xml: bytes, stream: bytes, *, magic: bytes = parking.SAVE_MAGIC,
               compressed: int = 0) -> Path:
    """A file laid out as libvirt 9.0's qemu_saveimage.c writes one."""
    data = xml + b"\0" * (1024 - len(xml) % 1024)  # libvirt pads the XML with zeros
    header = struct.pack("<16s5I56x", magic, 2, len(data), 1, compressed, 0)
    path.write_bytes(header + data + stream)
    return path


def read_exactly(f, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = f.read(n - len(out))
        if not chunk:
            raise EOFError(f"{len(out)} of {n} bytes")
        out += chunk
    return out


class FakeRestore:
    """conn.restoreFlags(pipe) as libvirt 9.0 does it: the header and XML read at once, QEMU
    launched, then (migrate-incoming) the stream read to its end."""

    def __init__(self, stream_size: int) -> None:
        self.stream_size = stream_size
        self.header = b""
        self.stream = b""
        self.removed = False

    def restoreFlags(self, path: str, dxml, flags: int) -> int:
        with open(path, "rb", buffering=0) as pipe:
            self.header = read_exactly(pipe, parking.HEADER.size)
            data_len = parking.HEADER.unpack(self.header)[2]
            read_exactly(pipe, data_len)
            time.sleep(0.05)  # QEMU's launch and its ~400 qom-get
            while len(self.stream) < self.stream_size:
                self.stream += pipe.read(self.stream_size - len(self.stream))
        return 0

    def lookupByName(self, name: str):
        restore = self

        class Dom:
            def managedSaveRemove(self, flags: int) -> int:
                restore.removed = True
                return 0

        return Dom()


@pytest.fixture
def stream() -> bytes:
    return parking.QEMU_MAGIC + b"\0\0\0\3" + os.urandom(3 * 1024 * 1024)


def test_the_stream_starts_where_libvirt_s_header_and_xml_end(tmp_path, stream):
    image = save_image(tmp_path / "a.save", b"<domain/>", stream)
    assert parking.stream_offset(image) == parking.HEADER.size + 1024
    assert image.read_bytes()[parking.stream_offset(image):] == stream


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"magic": b"LibvirtQemudPart"}, "not a complete libvirt save image"),
    ({"compressed": 1}, "compressed"),
])
def test_an_image_that_cannot_be_parked_is_refused_with_the_reason(tmp_path, stream, kwargs, says):
    image = save_image(tmp_path / "a.save", b"<domain/>", stream, **kwargs)
    with pytest.raises(parking.ParkError, match=says):
        parking.stream_offset(image)
    with pytest.raises(parking.ParkError, match="no QEMU stream"):
        parking.stream_offset(save_image(tmp_path / "b.save", b"<domain/>", b"nothing of QEMU's"))


def test_a_parked_restore_waits_with_the_header_and_gets_the_rest_at_the_claim(tmp_path, stream, monkeypatch):
    image = save_image(tmp_path / "a.save", b"<domain name='x'/>", stream)
    fake = FakeRestore(len(stream))
    monkeypatch.setattr(libvirt, "open", lambda uri: fake)
    root = tmp_path / "parked"
    root.mkdir()
    paths = parking.Paths(root, NAME)
    holder = threading.Thread(target=parking.hold, args=("qemu:///system", NAME, str(image), root))
    # The holder runs in this process here: it counts as live while its thread runs.
    monkeypatch.setattr(parking, "holder_pid", lambda p: 1 if holder.is_alive() else None)
    holder.start()
    deadline = time.monotonic() + 10
    while not parking.state_of(paths).startswith("parked") and time.monotonic() < deadline:
        time.sleep(0.01)

    # Parked: libvirt has its header, QEMU the first bytes of its stream, and nothing more.
    assert parking.state_of(paths).startswith("parked after")
    assert fake.header == image.read_bytes()[:parking.HEADER.size]
    assert fake.stream == stream[:parking.LEAD]
    assert paths.fifo.exists() and not fake.removed

    parking.feed(paths, str(image))
    parking.wait_restored(paths)
    holder.join(5)
    assert fake.stream == stream  # every byte once, in order
    assert fake.removed  # the saved image is removed once the restore succeeded, never before
    assert parking.restored(paths) and not paths.fifo.exists()
    with pytest.raises(parking.ParkError, match="claimed already"):
        parking.feed(paths, str(image))


def test_a_claim_of_a_parking_whose_holder_is_gone_fails_at_once(tmp_path, stream):
    image = save_image(tmp_path / "a.save", b"<domain/>", stream)
    paths = parking.Paths(tmp_path, NAME)
    paths.pid.write_text(str(os.getpid()))  # a pid, but not a holder's
    t0 = time.monotonic()
    with pytest.raises(parking.ParkError, match="has not written the header"):
        parking.feed(paths, str(image))
    assert time.monotonic() - t0 < 1


def local_engine(tmp_path, **opts) -> LibvirtEngine:
    return LibvirtEngine(uri=opts.pop("uri", "qemu:///system"),
                         options=NodeOptions(park_dir=str(tmp_path), **opts))


def test_only_nodes_on_this_host_park(tmp_path):
    assert local_engine(tmp_path).parks
    assert not local_engine(tmp_path, park_max=0).parks
    assert not local_engine(tmp_path, uri="qemu+ssh://node2/system").parks
    assert not local_engine(tmp_path, uri="test:///default").parks


def test_reconciliation_removes_what_an_ended_holder_left_of_its_own_node_only(tmp_path, monkeypatch):
    engine = local_engine(tmp_path)
    monkeypatch.setattr(engine, "_domain_named", lambda name: None)
    for name in (NAME, "tt-other-3"):
        parking.Paths(tmp_path, name).state.write_text("parked after 0.50 s")
        parking.Paths(tmp_path, name).pid.write_text("999999999")
    said = engine.tidy_parked("tt-unit-", suspended={NAME}, busy=set())
    assert said == [f"{NAME}: removed what an ended holder left"]
    assert parking.names(tmp_path) == {"tt-other-3"}


def test_a_claim_that_fails_unparks_and_says_so_for_the_plain_restore(tmp_path, monkeypatch, caplog):
    engine = local_engine(tmp_path)
    unparked = []

    def broken_feed(paths, save_path):
        raise parking.ParkError(f"{paths.name}: QEMU stopped reading its memory (1 of 2 bytes)")

    monkeypatch.setattr(parking, "feed", broken_feed)
    monkeypatch.setattr(engine, "_unpark", unparked.append)
    vm = VmSpec(id=7, name=NAME, template=TemplateSpec(name="t", path="t.qcow2"), cpu_num=1, mem_mb=64,
                disk_mb=64, mac="52:54:00:00:00:07", ip="10.200.0.7")
    assert engine._claim(vm) is False
    assert unparked == [NAME]
    assert "restoring from its saved image" in caplog.text


def test_prepare_gives_libvirtd_the_worker_threads_parked_restores_hold(tmp_path):
    conf = tmp_path / "libvirtd.conf"
    conf.write_text("#max_workers = 20\nlisten_tls = 0\n")
    assert host.ensure_libvirtd_conf(conf) is True
    assert f"\nmax_workers = {host.MAX_WORKERS}\n" in conf.read_text()
    assert host.ensure_libvirtd_conf(conf) is False  # unchanged: libvirtd is not restarted
    assert 2 * NodeOptions().park_max + 20 <= host.MAX_WORKERS


class ParkedDomain:
    """A domain in libvirt's start job: its state and destroy answer, nothing else does."""

    def __init__(self) -> None:
        self.destroyed = False

    def isActive(self) -> bool:
        return not self.destroyed

    def state(self) -> list[int]:
        return [libvirt.VIR_DOMAIN_SHUTOFF if self.destroyed else libvirt.VIR_DOMAIN_PAUSED, 0]

    def destroy(self) -> int:
        self.destroyed = True
        return 0

    def hasManagedSaveImage(self, flags: int) -> int:
        return 1

    def __getattr__(self, name: str):
        raise AssertionError(f"{name} would wait 30 s for the parked restore's job")


@pytest.fixture
def parked_vm(tmp_path, monkeypatch):
    """An engine whose VM NAME has a live holder (a stand-in process named as one) and a
    parked domain."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", parking.PROGRAM, NAME])
    parking.Paths(tmp_path, NAME).pid.write_text(str(holder.pid))
    parking.Paths(tmp_path, NAME).state.write_text("parked after 0.50 s")
    deadline = time.monotonic() + 5  # its command line shows once it runs
    while parking.holder_pid(parking.Paths(tmp_path, NAME)) is None and time.monotonic() < deadline:
        time.sleep(0.001)
    engine = local_engine(tmp_path)
    dom = ParkedDomain()
    monkeypatch.setattr(engine, "_domain_named", lambda name: dom)
    vm = VmSpec(id=7, name=NAME, template=TemplateSpec(name="t", path="t.qcow2"), cpu_num=1, mem_mb=64,
                disk_mb=64, mac="52:54:00:00:00:07", ip="10.200.0.7")
    yield engine, vm, dom, holder
    holder.kill()
    holder.wait()


def test_a_parked_vm_is_suspended_and_nothing_waits_on_its_domain(parked_vm):
    from engines.guest_io import GuestUnreachable
    from engines.specs import PowerState

    engine, vm, dom, _holder = parked_vm
    assert engine.is_parked(NAME) and engine.park_state(NAME) == "parked after 0.50 s"
    assert engine.power_state(vm) == PowerState.SUSPENDED
    assert engine.guest_addresses(vm) is None
    with pytest.raises(GuestUnreachable):
        engine.file_list(vm, "/")
    with pytest.raises(RuntimeError, match="nothing to pause"):
        engine.pause_vm(vm)
    assert engine.suspend_vm(vm) == "suspended already (parked)"
    engine.thaw_guest(vm)
    assert not dom.destroyed


def test_stopping_a_parked_vm_ends_its_qemu_and_holder_and_keeps_its_saved_image(parked_vm, tmp_path):
    engine, vm, dom, holder = parked_vm
    assert engine.stop_vm(vm) == "already stopped"
    assert dom.destroyed and holder.wait(5) is not None
    assert not engine.is_parked(NAME) and parking.names(tmp_path) == set()
