"""QEMU/KVM through libvirt-python: domains, pool volumes with a backing store, snapshots.

Also drives libvirt's in-process `test:///default` driver, which the unit tests
and control-plane benchmarks use (it keeps domains, volumes and snapshots in
memory and boots nothing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import libvirt
import libvirt_qemu

from engines import cloudinit
from engines.base import VmEngine
from engines.errors import EngineError, ErrorCode, fails_as
from engines.guest_io import (
    ConsoleStream,
    ExecRequest,
    ExecResult,
    FileEntry,
    GuestFile,
    GuestUnreachable,
    OutputSink,
)
from engines.kvm import host_has_working_kvm
from engines.libvirt import dhcp, guest_agent, parking, xml
from engines.libvirt.connection import get_connection, is_missing, reconnecting
from engines.libvirt.console import read_console_tail
from engines.libvirt.console_stream import LibvirtConsole
from engines.network.firewall import Firewall, MemoryFirewall
from engines.network.wiring import FirewalledNetwork
from engines.node_options import NodeOptions
from engines.specs import (
    DiskCut,
    DiskSpace,
    Feature,
    Inventory,
    PowerState,
    SnapshotSpec,
    StartOutcome,
    VmSpec,
)

log = logging.getLogger(__name__)
MIB = 1024 * 1024
SEED_SUFFIX = "-seed.img"  # a VM's cloud-init CIDATA volume
GENERATION = ".g"  # a VM's overlay after its disk was cut for cloning: <name>.g<n>.qcow2
# How long a pool refresh waits out another volume's upload or build (_refresh_pool).
POOL_BUSY_WAIT_S = 60.0
POOL_BUSY_POLL_S = 0.05


class DomainMissing(LookupError):
    """The VM has no domain on the node."""


class LibvirtEngine(FirewalledNetwork, VmEngine):
    kind = "libvirt"
    features = frozenset(
        {Feature.SNAPSHOT, Feature.START_STOP, Feature.NAT, Feature.FLAT,
         Feature.RAND_UUID, Feature.KEEP_IMAGE, Feature.DISK_LIMIT, Feature.SUSPEND,
         # EXEC and FILES through the guest agent: templates without one lack them
         Feature.EXEC, Feature.FILES, Feature.CONSOLE, Feature.CLONE}
    )
    # One connection serves every thread (libvirt's client multiplexes calls, and the
    # daemon locks per domain); a VM's DHCP entry and nftables elements are its own, each
    # change one update or one atomic transaction.
    concurrent_calls = True

    def __init__(self, *, uri: str, options: NodeOptions | None = None):
        super().__init__(uri=uri, options=options)
        opts = self.options
        self.pool_name = opts.pool_name
        self.network_name = opts.network_name
        self.vm_network = opts.vm_network
        self.pool_path = opts.pool_path or "/var/lib/ttportal/pool"
        self.bridge = opts.bridge
        self.console_dir = opts.console_dir
        self.stop_timeout = float(opts.stop_timeout)
        # How long a call waits for libvirtd to come back after losing it.
        self.reconnect_timeout = float(opts.reconnect_timeout)
        self.firewall: Firewall = opts.firewall or MemoryFirewall()
        self.park_max = int(opts.park_max)
        self.park_dir = Path(opts.park_dir or self.PARK_DIR)

    # --- plumbing ---------------------------------------------------------
    @property
    def conn(self) -> libvirt.virConnect:
        return get_connection(self.uri)

    @property
    def is_test_driver(self) -> bool:
        return self.uri.startswith("test://")

    def domain_type(self) -> str:
        if self.is_test_driver:
            return "test"
        return "kvm" if host_has_working_kvm() else "qemu"

    def _pool(self) -> libvirt.virStoragePool:
        return self.conn.storagePoolLookupByName(self.pool_name)

    def _refresh_pool(self, pool: libvirt.virStoragePool | None = None) -> libvirt.virStoragePool:
        """Refresh the pool (volumes made or removed behind libvirt's back). libvirt refuses
        a refresh while another volume's upload or build runs in the pool ("has asynchronous
        jobs running": storagePoolRefresh), as when the VMs of one create write their seeds
        side by side: that is waited out, as long as POOL_BUSY_WAIT_S, never failed."""
        pool = pool or self._pool()
        deadline = time.monotonic() + POOL_BUSY_WAIT_S
        while True:
            try:
                pool.refresh(0)
                return pool
            except libvirt.libvirtError as exc:
                busy = "asynchronous jobs running" in (exc.get_error_message() or str(exc))
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(POOL_BUSY_POLL_S)  # libvirt has no event for a pool's jobs ending

    def _domain(self, vm: VmSpec) -> libvirt.virDomain | None:
        return self._domain_named(vm.name)

    def _domain_named(self, name: str) -> libvirt.virDomain | None:
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if is_missing(exc):
                return None
            raise

    def _volume(self, name: str) -> libvirt.virStorageVol | None:
        try:
            return self._pool().storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if is_missing(exc):
                return None
            raise

    def _network(self) -> libvirt.virNetwork:
        return self.conn.networkLookupByName(self.network_name)

    # --- parked restores (engines/libvirt/parking.py) ----------------------------------
    PARK_DIR = "/run/ttportal/parked"

    @property
    def parks(self) -> bool:
        """Saved VMs are parked on a node of this host (its files are ours to read), never
        on the test driver or a remote node, which restore the plain way."""
        return self.park_max > 0 and not self.is_test_driver and not urlsplit(self.uri).hostname

    def _parking(self, name: str) -> parking.Paths:
        return parking.Paths(self.park_dir, name)

    def save_path(self, name: str) -> str:
        return os.path.join(self.SAVE_DIR, f"{name}.save")

    def is_parked(self, name: str) -> bool:
        """A holder waits with the VM's QEMU launched: libvirt's start job holds the domain,
        which then answers nothing but its state and destroy."""
        return self.parks and parking.holder_pid(self._parking(name)) is not None

    def park_state(self, name: str) -> str:
        """What the VM's holder last said ("launching", "written", "parked after <s> s"),
        "" when it is not parked."""
        return parking.state_of(self._parking(name)) if self.is_parked(name) else ""

    def parked(self) -> set[str]:
        if not self.parks:
            return set()
        return {n for n in parking.names(self.park_dir) if parking.holder_pid(self._parking(n)) is not None}

    def _park(self, name: str) -> str:
        """Launch the saved VM's QEMU ahead (best effort: a VM not parked restores the plain
        way). Says what it did, "" when this node never parks."""
        if not self.parks:
            return ""
        held = self.parked()
        if name in held:
            return "parked already"
        if len(held) >= self.park_max:
            return f"not parked: {len(held)} VMs are, the node's limit (park_max)"
        try:
            parking.park(self.park_dir, self.uri, name, self.save_path(name))
        except (parking.ParkError, OSError) as exc:
            log.warning("%s: not parked (%s)", name, exc)
            return f"not parked ({exc})"
        return "its restore parked (QEMU launched ahead)"

    def _unpark(self, name: str) -> bool:
        """The parked QEMU destroyed (its saved image stays), the holder ended, its files
        gone. True when it was parked."""
        if not self.parks:
            return False
        paths = self._parking(name)
        if name not in parking.names(self.park_dir):
            return False
        was = parking.holder_pid(paths) is not None
        self._destroy_if_parked(name, paths)
        parking.stop_holder(paths)
        return was

    def _destroy_if_parked(self, name: str, paths: parking.Paths) -> None:
        if parking.restored(paths):  # its restore has finished: a running VM, not a parked one
            return
        dom = self._domain_named(name)
        try:
            if dom is not None and dom.isActive() and dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
                dom.destroy()
        except libvirt.libvirtError as exc:
            if dom.isActive():
                raise exc

    def _claim(self, vm: VmSpec) -> bool:
        """Feed the parked QEMU its memory and wait for the restore: True when the domain
        runs; False after a failure, the parked domain destroyed (the plain restore follows)."""
        paths = self._parking(vm.name)
        try:
            t0 = time.monotonic()
            fed = parking.feed(paths, self.save_path(vm.name))
            parking.wait_restored(paths)
            log.info("%s: parked restore: memory fed in %.3f s, running after %.3f s", vm.name, fed,
                     time.monotonic() - t0)
        except (parking.ParkError, OSError) as exc:
            log.warning("%s: the parked restore failed (%s); restoring from its saved image", vm.name, exc)
            with contextlib.suppress(libvirt.libvirtError):
                self._unpark(vm.name)
            return False
        paths.remove()
        return True

    @reconnecting
    def tidy_parked(self, prefix: str, suspended: set[str], busy: set[str]) -> list[str]:
        """Reconciliation's pass over the parked VMs of names starting with `prefix`: ends
        each one whose VM is no longer suspended (nor in an operation: `busy`), a claim cut
        short, what a dead holder left; parks each suspended VM that is not (after a
        restart of libvirtd, which drops them). Says what it did."""
        if not self.parks:
            return []
        said = []
        for name in sorted(n for n in parking.names(self.park_dir) if n.startswith(prefix)):
            paths = self._parking(name)
            if parking.holder_pid(paths) is None:
                self._destroy_if_parked(name, paths)
                paths.remove()
                said.append(f"{name}: removed what an ended holder left")
            elif name not in suspended | busy:
                self._unpark(name)
                said.append(f"{name}: unparked (the VM is not suspended)")
            elif name not in busy and parking.claimed_for(paths) > 120:
                self._unpark(name)
                said.append(f"{name}: unparked (a claim cut short)")
        for name in sorted(suspended - busy - self.parked()):
            dom = self._domain_named(name)
            if dom is not None and not dom.isActive() and dom.hasManagedSaveImage(0):
                said.append(f"{name}: {self._park(name)}")
        return said

    @staticmethod
    def image_name(vm: VmSpec) -> str:
        return f"{vm.name}.qcow2"

    @staticmethod
    def seed_name(vm: VmSpec) -> str:
        return f"{vm.name}{SEED_SUFFIX}"

    def after_reconnect(self) -> None:
        """What libvirtd forgot or we missed while it was away: volumes made by a call
        that lost its connection show only after a pool refresh."""
        try:
            self._refresh_pool()
        except libvirt.libvirtError:
            log.warning("could not refresh pool %s after reconnecting", self.pool_name)

    @reconnecting
    def disk_space(self) -> DiskSpace | None:
        """The filesystem of the node's pool: read here when the node is this host (statvfs,
        the root reserve aside, as an unprivileged writer sees it), else as libvirt reports
        the pool (its capacity and available bytes). The test driver's pool is make-believe:
        None."""
        if self.is_test_driver:
            return None
        if not urlsplit(self.uri).hostname:
            with contextlib.suppress(OSError):
                return DiskSpace.of_path(self.pool_path)
        _state, capacity, _allocation, available = self._pool().info()
        return DiskSpace(total_bytes=capacity, free_bytes=available)

    def health(self) -> tuple[bool, str]:
        try:
            conn = self.conn
            version = conn.getLibVersion()
        except libvirt.libvirtError as exc:
            return False, f"libvirt at {self.uri} does not answer: {exc.get_error_message()}"
        major, minor, micro = version // 1_000_000, version // 1000 % 1000, version % 1000
        if self.is_test_driver:
            return True, f"libvirt {major}.{minor}.{micro} test driver: boots nothing (tests only)"
        accel = "KVM" if host_has_working_kvm() else "TCG (no usable KVM)"
        return True, f"libvirt {major}.{minor}.{micro} at {self.uri}, QEMU with {accel}"

    # --- init ---------------------------------------------------------------
    def init(self) -> None:
        """Ensure the node's storage pool and VM network exist and are active (idempotent)."""
        with fails_as(ErrorCode.ENGINE_INIT):
            self._init()

    @reconnecting
    def _init(self) -> None:
        if self.console_dir:
            os.makedirs(self.console_dir, exist_ok=True)
        self._ensure_pool()
        self._ensure_network()
        self.firewall.ensure()

    def _ensure_pool(self) -> None:
        conn = self.conn
        try:
            pool = conn.storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError as exc:
            if not is_missing(exc):
                raise
            if not self.is_test_driver:
                os.makedirs(self.pool_path, exist_ok=True)
            pool = conn.storagePoolDefineXML(xml.dir_pool_xml(self.pool_name, self.pool_path), 0)
        if not pool.isActive():
            pool.create(0)
        if not pool.autostart():
            pool.setAutostart(1)

    def _ensure_network(self) -> None:
        net = self._lookup_network()
        if net is not None and not xml.network_is_current(net.XMLDesc(0), self.vm_network):
            log.warning("network %s was defined by an older TT Portal; recreating it", self.network_name)
            if net.isActive():
                net.destroy()
            net.undefine()
            net = None
        if net is None:
            # `open` forward mode: libvirt adds no firewall rules; ours are the only ones.
            mode = "nat" if self.is_test_driver else "open"
            net = self.conn.networkDefineXML(
                xml.network_xml(self.network_name, self.bridge, self.vm_network, mode)
            )
        elif not self.is_test_driver:  # the test driver keeps no dnsmasq options
            self._serve_known_macs_only(net)
        if not net.isActive():
            net.create()
        if not net.autostart():
            net.setAutostart(1)

    def _serve_known_macs_only(self, net: libvirt.virNetwork) -> None:
        """A network an older version defined serves any MAC its range covers: its definition
        gains KNOWN_ONLY (host entries kept). A running dnsmasq reads it only when the network
        starts again: restarted now if no running guest is on it, else at its next start. Until
        then the bridge already keeps unknown MACs from its DHCP (engines.network.nftables)."""
        inactive = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
        if xml.serves_known_only(inactive):
            return
        self.conn.networkDefineXML(xml.with_known_only(inactive))
        if not net.isActive():
            return
        source = f"<source network='{self.network_name}'"
        running = self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        if any(source in dom.XMLDesc(0) for dom in running):
            log.warning("network %s: DHCP for known MACs only from its next start (guests run on it)",
                        self.network_name)
            return
        log.warning("network %s: restarted to serve known MACs only", self.network_name)
        net.destroy()

    def _lookup_network(self) -> libvirt.virNetwork | None:
        try:
            return self.conn.networkLookupByName(self.network_name)
        except libvirt.libvirtError as exc:
            if is_missing(exc):
                return None
            raise

    # --- storage ------------------------------------------------------------
    def _template_volume(self, vm: VmSpec) -> libvirt.virStorageVol:
        path = vm.template.path
        if path.startswith("/"):
            return self.conn.storageVolLookupByPath(path)
        return self._pool().storageVolLookupByName(path)

    @reconnecting
    def create_image(self, vm: VmSpec) -> str:
        """A qcow2 overlay on the template: constant time whatever the template's size."""
        existing = self._volume(self.image_name(vm))
        if existing is not None:  # a retried task: the image is already there
            return existing.path()
        # A clone's overlay sits on the disk its source had when it was cut (cut_disk).
        template = self.conn.storageVolLookupByPath(vm.base_image) if vm.base_image else \
            self._template_volume(vm)
        _type, template_capacity, _alloc = template.info()
        wanted = vm.disk_mb * MIB
        if wanted < template_capacity:
            raise EngineError(
                f"disk_size {vm.disk_mb} MiB is smaller than template {vm.template.name!r} "
                f"({template_capacity // MIB} MiB)",
                code=ErrorCode.STORAGE_CREATE_IMAGE,
            )
        fmt = _volume_format(template.XMLDesc(0))
        volume = self._pool().createXML(
            xml.overlay_volume_xml(self.image_name(vm), wanted, template.path(), fmt), 0
        )
        return volume.path()

    def upload_volume(self, name: str, source: str, fmt: str) -> str:
        """Copy a local file into the node's pool through libvirt (works for remote nodes too).

        Returns the volume's path. An existing volume of that name is kept: names carry
        a content fingerprint, so the same name means the same bytes.
        """
        existing = self._volume(name)
        if existing is not None:
            return existing.path()
        size = os.path.getsize(source)
        volume = self._pool().createXML(
            f"<volume><name>{name}</name><capacity unit='bytes'>{size}</capacity>"
            f"<target><format type='{fmt}'/></target></volume>", 0,
        )
        if self.is_test_driver:  # it keeps volumes but not their bytes, and has no upload
            return volume.path()
        try:
            stream = self.conn.newStream(0)
            volume.upload(stream, 0, size, 0)
            with open(source, "rb") as f:
                stream.sendAll(lambda _st, nbytes, fh: fh.read(nbytes), f)
            stream.finish()
        except Exception:
            volume.delete(0)
            raise
        return self._refresh_pool().storageVolLookupByName(name).path()

    def destroy_image(self, vm: VmSpec) -> None:
        # The overlay it writes to: after a clone (cut_disk) that is a later generation, and
        # the image first made for it is a base its clones read, removed with its last user.
        self.remove_image(os.path.basename(vm.runtime_image) or self.image_name(vm))

    @staticmethod
    def next_generation(vm: VmSpec) -> str:
        """The name of the VM's overlay after its next cut: <name>.g<n>.qcow2 (inventory knows it)."""
        head = os.path.basename(vm.runtime_image).removesuffix(".qcow2")
        _, sep, number = head.rpartition(GENERATION)
        generation = int(number) + 1 if sep and number.isdigit() else 1
        return f"{vm.name}{GENERATION}{generation}.qcow2"

    @reconnecting
    def cut_disk(self, vm: VmSpec) -> DiskCut:
        active_name = self.next_generation(vm)
        self._unpark(vm.name)  # its start job would hold the domain (parking.py)
        dom = self._require_domain(vm)
        # The test driver cuts the definition only (_cut_offline), not its running make-believe.
        current = xml.disk_source(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if self.is_test_driver else 0))
        if os.path.basename(current) == active_name:  # a retried task: cut already
            return DiskCut(base=_backing_of(self.conn.storageVolLookupByPath(current)), active=current,
                           how="cut already")
        active_path = os.path.join(os.path.dirname(current), active_name)
        if self.is_test_driver or not dom.isActive():
            how = "VM stopped" if not dom.isActive() else "the test driver's VM (no guest)"
            self._cut_offline(dom, current, active_name)
        elif self._paused(dom):
            raise EngineError(f"{vm.name} is paused: start it, or stop it, before cloning it",
                              code=ErrorCode.SNAPSHOT_CREATE)
        else:
            how = self._cut_live(dom, vm, active_path)
        self._refresh_pool()
        return DiskCut(base=current, active=active_path, how=how)

    def _cut_offline(self, dom: libvirt.virDomain, current: str, active_name: str) -> None:
        """A stopped VM's (or the test driver's, which has no block layer): the new overlay is
        made as a volume, and the definition points at it."""
        base = self.conn.storageVolLookupByPath(current)
        _type, capacity, _alloc = base.info()
        self._pool().createXML(xml.overlay_volume_xml(active_name, capacity, current, "qcow2"), 0)
        active = self._pool().storageVolLookupByName(active_name).path()
        self.conn.defineXML(xml.with_disk_source(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), active))

    def _cut_live(self, dom: libvirt.virDomain, vm: VmSpec, active_path: str) -> str:
        """QEMU switches the running VM to the new overlay (an external disk-only snapshot,
        no metadata kept); its filesystems frozen by the guest agent meanwhile if it answers."""
        self._thaw(dom)  # an attempt cut short may have left them frozen
        try:
            dom.fsFreeze()
            how = "filesystems frozen by the guest agent, then thawed"
        except libvirt.libvirtError as exc:
            log.info("%s: the guest agent froze nothing (%s); its disk is cut crash-consistent", vm.name, exc)
            how = ("crash-consistent: no guest agent answered, so the disk was cut as it was "
                   "(what a power cut would leave)")
        flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
                 | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
        try:
            dom.snapshotCreateXML(xml.external_snapshot_xml(f"cut-{int(time.time())}", active_path), flags)
        finally:
            self._thaw(dom)
        return how

    @reconnecting
    def create_seed(self, vm: VmSpec) -> None:
        """The CIDATA volume, written afresh: a retried create may find a half-uploaded one."""
        self.remove_image(self.seed_name(vm))
        with tempfile.TemporaryDirectory(prefix="tt-seed-") as tmp:
            seed = cloudinit.write_seed(vm.cloud_init, Path(tmp) / "seed.img")
            self.upload_volume(self.seed_name(vm), str(seed), "raw")

    def destroy_seed(self, vm: VmSpec) -> None:
        self.remove_image(self.seed_name(vm))

    @reconnecting
    def storage_create_snapshot(self, vm: VmSpec, name: str) -> str:
        self._unpark(vm.name)  # its start job would hold the domain (parking.py)
        dom = self._require_domain(vm)
        if not self._has_snapshot(dom, name):  # else a retried task already made it
            dom.snapshotCreateXML(xml.snapshot_xml(name), 0)
        return name

    @staticmethod
    def _has_snapshot(dom: libvirt.virDomain, name: str) -> bool:
        try:
            dom.snapshotLookupByName(name)
            return True
        except libvirt.libvirtError as exc:
            if not is_missing(exc):
                raise
            return False

    @reconnecting
    def storage_snapshot_live(self, vm: VmSpec, name: str) -> str | None:
        # An internal snapshot of a running domain is a full checkpoint (memory and
        # disks); frozen filesystems make its disk state consistent on its own too, so
        # the VM the snapshot gives back boots clean whatever its memory held.
        self._unpark(vm.name)  # its start job would hold the domain (parking.py)
        dom = self._require_domain(vm)
        self._thaw(dom)  # an attempt cut short may have left them frozen
        if self._has_snapshot(dom, name):
            return name  # a retried task already made it
        try:
            frozen = dom.fsFreeze()
        except libvirt.libvirtError as exc:  # no agent in the guest, or not answering
            log.info("%s: the guest agent froze nothing (%s); snapshotting stopped instead", vm.name, exc)
            return None
        log.info("%s: %s filesystems frozen for snapshot %s", vm.name, frozen, name)
        try:
            dom.snapshotCreateXML(xml.snapshot_xml(name), 0)
        finally:
            self._thaw(dom)
        return name

    @reconnecting
    def thaw_guest(self, vm: VmSpec) -> None:
        dom = self._domain(vm)
        if dom is not None and dom.isActive() and not self.is_parked(vm.name):
            self._thaw(dom)

    @staticmethod
    def _thaw(dom: libvirt.virDomain) -> None:
        with contextlib.suppress(libvirt.libvirtError):  # nothing frozen, or no agent
            dom.fsThaw()

    @reconnecting
    def storage_destroy_snapshot(self, vm: VmSpec, snapshot: SnapshotSpec) -> None:
        dom = self._domain(vm)
        if dom is None:
            return
        try:
            dom.snapshotLookupByName(snapshot.path or snapshot.name).delete(0)
        except libvirt.libvirtError as exc:
            if not is_missing(exc):
                raise

    @reconnecting
    def storage_apply_snapshot(self, vm: VmSpec, snapshot: SnapshotSpec) -> None:
        self._unpark(vm.name)  # its start job would hold the domain (parking.py)
        dom = self._require_domain(vm)
        snap = dom.snapshotLookupByName(snapshot.path or snapshot.name)
        if dom.hasManagedSaveImage(0):
            # A suspended VM's saved memory belongs to the disk being reverted: it goes,
            # and the VM ends stopped (its memory would not match the snapshot's disk).
            dom.managedSaveRemove(0)
        dom.revertToSnapshot(snap, 0)
        # A snapshot taken of a running guest reverts to running; the flow
        # decides the power state afterwards, so leave it stopped here.
        if dom.isActive():
            dom.destroy()

    # --- lifecycle ------------------------------------------------------------
    def _require_domain(self, vm: VmSpec) -> libvirt.virDomain:
        """The VM's domain. A missing one is a plain error: the flow calling this
        (start, snapshot, apply) gives it the code of its own step."""
        dom = self._domain(vm)
        if dom is None:
            raise DomainMissing(f"VM {vm.name} is not defined on {self.uri}")
        return dom

    def _boot_file(self, path: str) -> str:
        """Kernel/initrd: a volume name in the node's pool (so every node has its own copy)."""
        if not path or path.startswith("/"):
            return path
        return self._pool().storageVolLookupByName(path).path()

    def console_path(self, vm_name: str) -> str:
        return os.path.join(self.console_dir, f"{vm_name}.log") if self.console_dir else ""

    def console_log(self, vm_name: str, limit: int = 16_384) -> str | None:
        # virtlogd writes the log on the node: only a node on this host has it here.
        if not self.console_dir or urlsplit(self.uri).hostname:
            return None
        return read_console_tail(self.console_path(vm_name), limit)

    def open_console(self, vm: VmSpec) -> ConsoleStream:
        # The domain's pty serial console (engines/libvirt/xml.py), on a connection of its own.
        return LibvirtConsole(self.uri, vm.name)

    def _domain_xml(self, vm: VmSpec) -> str:
        # libvirt refuses to redefine a domain under the same name with another UUID
        # (update_vm, or define_vm in a retried create), and a VM without rand_uuid
        # has none of its own: keep the one libvirt gave it.
        if not vm.uuid:
            dom = self._domain(vm)
            if dom is not None:
                vm = vm.replace(uuid=dom.UUIDString())
        console_log = self.console_path(vm.name)
        template = vm.template
        if template.kernel:
            template = dataclasses.replace(
                template, kernel=self._boot_file(template.kernel), initrd=self._boot_file(template.initrd)
            )
        return xml.domain_xml(
            vm.replace(template=template),
            domain_type=self.domain_type(),
            disk_path=vm.runtime_image or self._pool_path_of(self.image_name(vm)),
            seed_path=self._pool_path_of(self.seed_name(vm)) if vm.cloud_init else "",
            network_name=self.network_name,
            console_log=console_log,
            arch="" if self.is_test_driver else "x86_64",
        )

    def _pool_path_of(self, volume_name: str) -> str:
        volume = self._volume(volume_name)
        return volume.path() if volume is not None else ""

    @reconnecting
    def define_vm(self, vm: VmSpec) -> None:
        self.conn.defineXML(self._domain_xml(vm))

    @reconnecting
    def update_vm(self, vm: VmSpec) -> None:
        # Redefining a persistent domain replaces its config; it takes effect at next boot.
        self.conn.defineXML(self._domain_xml(vm))

    def undefine_vm(self, vm: VmSpec) -> None:
        self.remove_instance(vm.name)

    @reconnecting
    def start_vm(self, vm: VmSpec) -> StartOutcome:
        """Boot a stopped VM, or resume a suspended one (libvirt restores its managed save;
        a paused one's vCPUs run again). Says which: booted, restored, resumed, running.
        A parked one (engines/libvirt/parking.py) gets its memory fed to its waiting QEMU;
        if that fails, the plain restore follows."""
        dom = self._require_domain(vm)
        if self.is_parked(vm.name) and self._claim(vm):
            if self._paused(dom):  # it was saved paused
                dom.resume()
            if dom.hasManagedSaveImage(0):  # the holder removes it; never restored twice
                dom.managedSaveRemove(0)
            self._sync_guest_clock(dom, vm)
            return StartOutcome.RESTORED
        if dom.isActive() and self._paused(dom):
            dom.resume()
            self._sync_guest_clock(dom, vm)
            return StartOutcome.RESUMED
        if dom.isActive():
            return StartOutcome.RUNNING
        suspended = bool(dom.hasManagedSaveImage(0))
        if not suspended and f"'{vm.tap}'" not in dom.XMLDesc(0):
            # Defined before its port was named by us: the firewall binds the
            # VM to that name, so it takes it at this boot. (A saved image restores
            # with the definition it was saved with: never redefined.)
            self.conn.defineXML(self._domain_xml(vm))
        dom.create()
        if not suspended:
            return StartOutcome.BOOTED
        if self._paused(dom):  # it was saved paused (a paused spare, then saved)
            dom.resume()
        self._sync_guest_clock(dom, vm)
        return StartOutcome.RESTORED

    @staticmethod
    def _paused(dom: libvirt.virDomain) -> bool:
        return dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED

    @reconnecting
    def pause_vm(self, vm: VmSpec) -> str:
        dom = self._require_domain(vm)
        if not dom.isActive() or self.is_parked(vm.name):
            raise RuntimeError(f"{vm.name} is not running: there is nothing to pause")
        if not self._paused(dom):
            dom.suspend()
        return "paused in memory"

    @reconnecting
    def memory_held(self, vm: VmSpec) -> int | None:
        """Bytes of the node's memory the VM's QEMU holds (resident), 0 when none runs."""
        dom = self._domain(vm)
        if dom is None or not dom.isActive():
            return 0
        if self.is_parked(vm.name):  # libvirt answers no stats while its restore waits
            return parking.rss(vm.name)
        try:
            return int(dom.memoryStats().get("rss", 0)) * 1024
        except libvirt.libvirtError:
            return None

    @staticmethod
    def _sync_guest_clock(dom: libvirt.virDomain, vm: VmSpec) -> None:
        """A resumed guest's clock stands where it was saved: its agent, if it has one,
        sets it from the host's. Without one (the busybox template) it lags by the time
        the VM was suspended, until the guest corrects it itself (NTP, hwclock)."""
        try:
            dom.setTime(None, libvirt.VIR_DOMAIN_TIME_SYNC)
        except libvirt.libvirtError as exc:
            log.info("%s: no guest agent set the clock after the resume (%s)", vm.name, exc)

    # What a guest prints on its serial console once its services run (the busybox
    # template's rcS does); a guest with an agent answers it instead.
    READY_MARK = "TT-READY"

    def wait_booted(self, vm: VmSpec, *, timeout: float) -> str:
        """Polls (every 50 ms) the console log for READY_MARK, or the guest agent's ping."""
        if self.is_test_driver:
            return "the test driver boots nothing"
        started = time.monotonic()
        deadline, next_ping = started + timeout, started
        while True:
            ping = time.monotonic() >= next_ping  # an agent that is not there costs its timeout
            next_ping = time.monotonic() + 1 if ping else next_ping
            how = self._guest_says_up(vm, ping=ping)
            if how:
                return f"{how} after {time.monotonic() - started:.1f} s"
            if time.monotonic() > deadline:
                raise EngineError(f"the guest of {vm.name} did not say it was up within {timeout:g} s "
                                  f"(no {self.READY_MARK} line on its console, no agent)",
                                  code=ErrorCode.START_VM)
            time.sleep(0.05)

    @reconnecting
    def _guest_says_up(self, vm: VmSpec, *, ping: bool) -> str:
        dom = self._require_domain(vm)
        if not dom.isActive():
            raise EngineError(f"{vm.name} stopped while booting", code=ErrorCode.START_VM)
        log_text = read_console_tail(self.console_path(vm.name), 4096) if self.console_dir else None
        if log_text and self.READY_MARK in log_text:
            return "its console said so"
        if not ping:
            return ""
        try:
            libvirt_qemu.qemuAgentCommand(dom, '{"execute": "guest-ping"}', 1, 0)
        except libvirt.libvirtError:
            return ""
        return "its agent answered"

    # Where libvirt's QEMU driver keeps managed save images (qemu.conf's save_image_dir).
    SAVE_DIR = "/var/lib/libvirt/qemu/save"

    @reconnecting
    def disk_held(self, vm: VmSpec) -> int | None:
        """Bytes the VM's overlay image and saved memory take on the node (the saved memory
        only when the node is this host)."""
        # The overlay it writes to now (a later generation once it was cloned: engines' cut_disk).
        volume = self._volume(os.path.basename(vm.runtime_image) or self.image_name(vm))
        held = volume.info()[2] if volume is not None else 0
        if self.is_test_driver or urlsplit(self.uri).hostname:
            return held
        with contextlib.suppress(FileNotFoundError):
            held += os.path.getsize(os.path.join(self.SAVE_DIR, f"{vm.name}.save"))
        return held

    @reconnecting
    def suspend_vm(self, vm: VmSpec) -> str:
        dom = self._require_domain(vm)
        if self.is_parked(vm.name):
            return "suspended already (parked)"
        if not dom.isActive():
            if dom.hasManagedSaveImage(0):
                parked = self._park(vm.name)
                return "suspended already" + (f"; {parked}" if parked else "")
            raise RuntimeError(f"{vm.name} is not running: there is no memory to save")
        started = time.monotonic()
        dom.managedSave(0)
        said = f"memory saved in {time.monotonic() - started:.1f} s"
        parked = self._park(vm.name)
        return said + (f"; {parked}" if parked else "")

    @reconnecting
    def stop_vm(self, vm: VmSpec, *, force: bool = False) -> str:
        """Guest agent or ACPI shutdown, forced off after `stop_timeout` so a stopped VM uses nothing."""
        dom = self._domain(vm)
        if self._unpark(vm.name):  # a suspended VM: its saved memory stays, as unparked
            return "already stopped"
        if dom is None or not dom.isActive():
            return "already stopped"
        asked = ""
        if not force:
            asked = self._ask_to_shut_down(dom, vm)
            deadline = time.monotonic() + self.stop_timeout
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not dom.isActive():
                return f"shut down when asked through the {asked}"
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if dom.isActive():  # it may have shut down between the check and the call
                raise exc
        if force:
            return "forced off"
        return f"forced off after {self.stop_timeout:g} s (asked through the {asked or 'nothing'})"

    # How a guest is asked to power off, in order: its agent (a clean shutdown even when
    # nothing in the guest handles the ACPI button), then the ACPI button.
    _SHUTDOWN_METHODS = (
        (libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT, "guest agent"),
        (libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN, "ACPI power button"),
    )

    def _ask_to_shut_down(self, dom: libvirt.virDomain, vm: VmSpec) -> str:
        """The method the guest was asked by; "" when none took (it is forced off later)."""
        for flag, method in self._SHUTDOWN_METHODS:
            try:
                dom.shutdownFlags(flag)
                log.info("%s: shutdown asked through the %s", vm.name, method)
                return method
            except libvirt.libvirtError as exc:
                log.debug("%s: %s shutdown refused: %s", vm.name, method, exc)
        try:  # a driver without these flags (libvirt's test driver) takes a plain request
            dom.shutdown()
            return "driver's own shutdown request"
        except libvirt.libvirtError:
            log.warning("%s refused every shutdown request; forcing it off", vm.name)
            return ""

    @reconnecting
    def power_state(self, vm: VmSpec) -> PowerState:
        dom = self._domain(vm)
        if dom is None:
            return PowerState.MISSING
        if self.is_parked(vm.name):  # saved, its QEMU launched ahead (parking.py)
            return PowerState.SUSPENDED
        if dom.isActive():
            # Paused (a warm spare kept in memory): not running, and the next start resumes it.
            return PowerState.SUSPENDED if self._paused(dom) else PowerState.RUNNING
        return PowerState.SUSPENDED if dom.hasManagedSaveImage(0) else PowerState.STOPPED

    @reconnecting
    def guest_addresses(self, vm: VmSpec) -> list[tuple[str, str]] | None:
        dom = self._domain(vm)
        if dom is None or not dom.isActive() or self.is_parked(vm.name):
            return None
        try:
            interfaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
        except libvirt.libvirtError:  # no agent connected, or not answering
            return None
        return [
            (name, f"{addr['addr']}/{addr['prefix']}")
            for name, data in sorted(interfaces.items()) if name != "lo"
            for addr in data.get("addrs") or ()
        ]

    # --- into the running guest, through its agent (engines/libvirt/guest_agent.py) -----
    # Not @reconnecting: a command run again is not the same as a command run once.
    def exec(self, vm: VmSpec, request: ExecRequest, on_output: OutputSink | None = None) -> ExecResult:
        return guest_agent.run(self._agent_domain(vm), request, on_output)

    def file_put(self, vm: VmSpec, path: str, chunks, *, mode: int | None = None, owner: str = "") -> int:
        return guest_agent.put_file(self._agent_domain(vm), path, chunks, mode=mode, owner=owner)

    def file_get(self, vm: VmSpec, path: str) -> GuestFile:
        return guest_agent.get_file(self._agent_domain(vm), path)

    def file_list(self, vm: VmSpec, path: str) -> list[FileEntry]:
        return guest_agent.list_dir(self._agent_domain(vm), path)

    def _agent_domain(self, vm: VmSpec) -> libvirt.virDomain:
        dom = self._domain(vm)
        if dom is None or not dom.isActive() or self.is_parked(vm.name):
            raise GuestUnreachable(f"{vm.name} is not running: no guest agent to ask")
        return dom

    # --- what the node holds -------------------------------------------------------
    @reconnecting
    def inventory(self, prefix: str) -> Inventory:
        domains = frozenset(d.name() for d in self.conn.listAllDomains() if d.name().startswith(prefix))
        pool = self._refresh_pool()  # volumes made or removed behind libvirt's back
        images = {  # runtime images (of each generation) and seeds, each named after its VM
            v.name(): _owner_of(v.name())
            for v in pool.listAllVolumes()
            if v.name().startswith(prefix) and v.name().endswith((".qcow2", SEED_SUFFIX))
        }
        return Inventory(instances=domains, images=images, reservations=dhcp.reservations(self._network()))

    @reconnecting
    def remove_instance(self, name: str) -> None:
        self._unpark(name)
        dom = self._domain_named(name)
        if dom is None:
            return
        if dom.isActive():
            dom.destroy()
        if dom.hasManagedSaveImage(0):
            dom.managedSaveRemove(0)  # a suspended VM's saved memory goes with it
        # Snapshot metadata goes with the domain; the snapshot data lives in the
        # overlay image, which destroy_image removes.
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)

    @reconnecting
    def remove_image(self, name: str) -> None:
        volume = self._volume(name)
        if volume is not None:
            volume.delete(0)

    @reconnecting
    def set_reservation(self, mac: str, ip: str, name: str, *, present: bool) -> None:
        if present:
            dhcp.put(self._network(), mac, ip, name)
        else:
            dhcp.drop(self._network(), mac)

    # --- network: the firewall elements are FirewalledNetwork's; the address is DHCP's ---
    @reconnecting
    def put_address(self, vm: VmSpec) -> None:
        dhcp.put(self._network(), vm.mac, vm.ip, vm.name)

    @reconnecting
    def drop_address(self, vm: VmSpec) -> None:
        dhcp.drop(self._network(), vm.mac)


def _owner_of(volume: str) -> str:
    """The VM a volume was made for: <name>.qcow2, <name>.g<n>.qcow2, <name>-seed.img."""
    name = volume.removesuffix(".qcow2").removesuffix(SEED_SUFFIX)
    head, sep, generation = name.rpartition(GENERATION)
    return head if sep and generation.isdigit() else name


def _backing_of(volume: libvirt.virStorageVol) -> str:
    path = ET.fromstring(volume.XMLDesc(0)).find("./backingStore/path")
    return path.text if path is not None and path.text else ""


def _volume_format(volume_xml: str) -> str:
    fmt = ET.fromstring(volume_xml).find("./target/format")
    return fmt.get("type", "raw") if fmt is not None else "raw"
