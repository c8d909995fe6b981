"""Plain data handed to engine drivers.

Drivers never see Django models: they get these small dataclasses, so a driver
can be tested and run on its own and the control plane stays in the services.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import os
from dataclasses import dataclass, field

from engines.cloudinit import CloudInitSpec


class Feature(enum.StrEnum):
    """What an engine can do; checked before an operation is accepted (the seed's check_feat)."""

    SNAPSHOT = "snapshot"
    START_STOP = "start_stop"
    NAT = "nat"
    FLAT = "flat"
    RAND_UUID = "rand_uuid"
    KEEP_IMAGE = "keep_image"
    DISK_LIMIT = "disk_limit"  # a VM's disk gets the size asked for, and no more
    SUSPEND = "suspend"  # the guest's memory saved to disk and restored by the next start
    # Into a running guest (engines/guest_io.py). EXEC and FILES need the template's own
    # feature of the same name too (a guest agent, a shell): vms.guest_access checks both.
    EXEC = "exec"  # run a command in it
    FILES = "files"  # copy files in and out, list a directory
    CONSOLE = "console"  # an interactive console (serial port, tty)
    CLONE = "clone"  # a running VM's disk cut at a point in time, as the backing file of new VMs


class PowerState(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    SUSPENDED = "suspended"  # not running, its memory saved: the next start resumes it
    MISSING = "missing"  # the engine has no such VM


class StartOutcome(enum.StrEnum):
    """What `start_vm` did, for the drivers that can say (the others return None)."""

    BOOTED = "booted"  # from its disk: a cold boot
    RESTORED = "restored"  # from its memory saved on disk (a suspended VM, a saved spare)
    RESUMED = "resumed"  # from a pause: its memory was held all along (a paused spare)
    RUNNING = "running"  # it was running already: nothing done


@dataclass(frozen=True)
class TemplateSpec:
    name: str
    path: str  # volume name in the node's pool, image reference, etc.
    size_mb: int = 0
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    cloud_init: bool = False  # the guest reads a NoCloud seed on its first boot
    guest_agent: bool = False  # the guest runs qemu-guest-agent (the template's `guest-agent` feature)


@dataclass(frozen=True)
class PortSpec:
    protocol: str  # "tcp" | "udp"
    inner_port: int
    public_port: int


def port_prefix(engine_prefix: str) -> str:
    """What the ports of one node's VMs start with (`engine_prefix`: "tt-<node>"): bridge
    hooks see every bridge of the host, and this is how a node's rules tell its own."""
    return "t" + hashlib.sha1(engine_prefix.encode()).hexdigest()[:6]


def tap_name(engine_name: str) -> str:
    """The host side of a VM's network interface ("tt-<node>-<id>" -> its node's port
    prefix and the id in base 36): named by us, so the node's firewall can bind the VM's
    MAC and IP to the port it really sends from. Unique on the host, and within the
    kernel's 15 characters (ids up to 36^8)."""
    head, _, vm_id = engine_name.rpartition("-")
    if not vm_id.isdigit():
        return port_prefix(head) + hashlib.sha1(engine_name.encode()).hexdigest()[:8]
    number, digits = int(vm_id), ""
    while True:
        number, rest = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[rest] + digits
        if not number:
            return port_prefix(head) + digits


@dataclass(frozen=True)
class VmSpec:
    """Everything a driver needs to build, run and wire one VM."""

    id: int
    name: str  # engine-side name, unique per node (e.g. "tt-vm-42")
    template: TemplateSpec
    cpu_num: int
    mem_mb: int
    disk_mb: int
    mac: str
    ip: str
    runtime_image: str = ""
    net_kind: str = "nat"
    uuid: str = ""
    ports: tuple[PortSpec, ...] = ()
    deny_outgoing: bool = False
    blacklist: tuple[str, ...] = ()
    keep_image: bool = False
    # Isolation: the Env it belongs to, and every Env whose VMs may reach it (its
    # own and those it is peered with).
    env_id: int = 0
    reach: tuple[int, ...] = ()
    # The first-boot seed, for a template with cloud-init.
    cloud_init: CloudInitSpec | None = None
    # It is booted to have its memory saved (a warm spare): its guest is to zero the memory
    # it frees, so the saved image holds only what the guest uses (a driver that boots the
    # kernel itself says so on its command line; engines.libvirt.xml.kernel_cmdline).
    zero_freed_memory: bool = False
    # A clone (envs/cloning.py): its disk is an overlay on `base_image`, a disk another VM
    # had at the moment it was cloned, not on the template; and its guest takes
    # `machine_id` (32 hex digits) rather than the one that disk holds.
    base_image: str = ""
    machine_id: str = ""
    # Its Env sleeps (envs/sleep.py): its forwarded TCP ports lead to the node's waker at this
    # address and port (the `wake_tcp` map, looked up before `fwd_tcp`), not to the VM.
    wake_to: tuple[str, int] | None = None

    def replace(self, **changes) -> VmSpec:
        return dataclasses.replace(self, **changes)

    @property
    def tap(self) -> str:
        return tap_name(self.name)

    def to_meta(self) -> dict:
        """The VM's config as JSON-able data (the seed's cached meta file)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_meta(cls, meta: dict) -> VmSpec:
        data = dict(meta)
        data["template"] = TemplateSpec(**data["template"])
        data["ports"] = tuple(PortSpec(**p) for p in data.get("ports", ()))
        data["blacklist"] = tuple(data.get("blacklist", ()))
        data["reach"] = tuple(data.get("reach", ()))
        if data.get("cloud_init"):
            seed = dict(data["cloud_init"])
            data["cloud_init"] = CloudInitSpec(**{**seed, "ssh_keys": tuple(seed.get("ssh_keys", ()))})
        return cls(**data)


@dataclass(frozen=True)
class SnapshotSpec:
    name: str
    path: str = ""  # engine reference to the snapshot data
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DiskSpace:
    """The filesystem that holds a node's guest disks (its pool, or the engine's storage)."""

    total_bytes: int  # its size
    free_bytes: int  # what may still be written there (statvfs f_bavail: the root reserve aside)

    @classmethod
    def of_path(cls, path: str) -> DiskSpace:
        """The filesystem holding `path`, on this host."""
        st = os.statvfs(path)
        return cls(total_bytes=st.f_blocks * st.f_frsize, free_bytes=st.f_bavail * st.f_frsize)

    @property
    def total_mb(self) -> int:
        return self.total_bytes // MIB

    @property
    def free_mb(self) -> int:
        return self.free_bytes // MIB


MIB = 1024 * 1024


@dataclass(frozen=True)
class SnapshotResult:
    path: str
    meta: dict


@dataclass(frozen=True)
class DiskCut:
    """A VM's disk cut for cloning (VmEngine.cut_disk): `base` is the disk as it was, now
    read-only, the backing file of the VM's new `active` overlay and of its clones'; `how`
    says how consistent it is, for the operation's log."""

    base: str
    active: str
    how: str


@dataclass(frozen=True)
class Inventory:
    """What an engine holds under one name prefix, to compare with the database."""

    instances: frozenset[str]  # engine names of VMs (domains, containers)
    images: dict[str, str]  # runtime image name -> engine name of the VM it was made for
    # MAC -> IP the node's DHCP hands out; None where the engine keeps no such list (a
    # container is created with its address, a Firecracker guest is booted with it).
    reservations: dict[str, str] | None
