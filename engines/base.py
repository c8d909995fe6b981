"""The engine interface: the seed's VmEngine, Network and Storage traits.

"The seed" is the design model this project implements (docs/seed.md): its traits
map to these classes method by method, and its flows to the composite methods below.

Drivers implement the small primitives; the composite flows (create, destroy,
snapshot, apply) live once here so every engine gets the same ordering,
error codes and roll-back.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

from engines.errors import ErrorCode, fails_as
from engines.guest_io import (
    ConsoleStream,
    ExecRequest,
    ExecResult,
    FileEntry,
    GuestFile,
    OutputSink,
    unsupported,
)
from engines.node_options import NodeOptions
from engines.specs import (
    DiskCut,
    DiskSpace,
    Feature,
    Inventory,
    PowerState,
    SnapshotResult,
    SnapshotSpec,
    StartOutcome,
    VmSpec,
)

log = logging.getLogger(__name__)

# Progress callback: (percent, message). Services record it on the Operation.
Progress = Callable[[int, str], None]


def _no_progress(percent: int, message: str) -> None:
    pass


__all__ = ["Network", "Progress", "Storage", "VmEngine", "fails_as"]


class Network(ABC):
    """How a VM is wired: DHCP entry, port forwarding, egress policy."""

    @abstractmethod
    def set_net(self, vm: VmSpec, previous: VmSpec | None = None) -> None:
        """Wire the VM; with `previous` (what is installed now) apply only the difference."""

    @abstractmethod
    def unset_net(self, vm: VmSpec) -> None: ...

    @abstractmethod
    def resync_net(self, vm: VmSpec) -> None:
        """Make the VM's wiring exactly `vm`'s, whatever is installed now (after a failure
        nobody knows how far a change got)."""

    @abstractmethod
    def deny_outgoing(self, vm: VmSpec) -> None: ...

    @abstractmethod
    def allow_outgoing(self, vm: VmSpec) -> None: ...

    @abstractmethod
    def set_blacklist(self, vm: VmSpec, previous: VmSpec | None = None) -> None:
        """Make the VM's blocked addresses exactly `vm.blacklist` (an empty one clears it)."""

    @abstractmethod
    def set_reach(self, vm: VmSpec, previous: VmSpec) -> None:
        """Make the Envs whose VMs may reach this VM exactly `vm.reach` (a peering began or ended)."""


class Storage(ABC):
    """The runtime image and its snapshots."""

    @abstractmethod
    def create_image(self, vm: VmSpec) -> str:
        """Create the runtime image from the template; return its reference."""

    @abstractmethod
    def destroy_image(self, vm: VmSpec) -> None: ...

    @abstractmethod
    def create_seed(self, vm: VmSpec) -> None:
        """Hand the guest its first-boot data (`vm.cloud_init`, never None here)."""

    @abstractmethod
    def destroy_seed(self, vm: VmSpec) -> None:
        """Remove the seed; a missing one (or a VM that never had one) is fine."""

    @abstractmethod
    def storage_create_snapshot(self, vm: VmSpec, name: str) -> str:
        """Snapshot the (stopped) VM's storage; return the snapshot's reference."""

    @abstractmethod
    def storage_snapshot_live(self, vm: VmSpec, name: str) -> str | None:
        """Snapshot the running VM without stopping it, its filesystems frozen by its guest
        agent meanwhile; the snapshot's reference, or None (and nothing done) when the
        guest cannot freeze them (no agent answering)."""

    @abstractmethod
    def thaw_guest(self, vm: VmSpec) -> None:
        """Best effort: the guest's filesystems thawed (after a snapshot cut short)."""

    @abstractmethod
    def storage_destroy_snapshot(self, vm: VmSpec, snapshot: SnapshotSpec) -> None: ...

    @abstractmethod
    def storage_apply_snapshot(self, vm: VmSpec, snapshot: SnapshotSpec) -> None: ...


class VmEngine(Network, Storage, ABC):
    """A host engine (QEMU through libvirt, Docker, Firecracker) bound to one node."""

    kind: str = ""
    features: frozenset[Feature] = frozenset()
    # A new VM's image is a full copy of its template's (it takes the template's size on
    # the node at once), not a thin overlay over it.
    copies_template: bool = False
    # Its VMs can write no more than their disk_mb (a disk image of that size). False: a
    # VM's writable storage may outgrow it (a container's layer where the storage driver
    # sets no limit), and the disk watchdog (vms/disk_watch.py) reads `writable_sizes`.
    bounds_disks: bool = True
    # Its calls for different VMs may run at once, each VM's in a thread of its own (the
    # create and start of an Env's VMs: vms/together.py). False: one VM after another.
    concurrent_calls: bool = False

    def __init__(self, *, uri: str, options: NodeOptions | None = None):
        self.uri = uri
        self.options = options or NodeOptions()

    # --- lifecycle primitives a driver provides -------------------------
    @abstractmethod
    def init(self) -> None:
        """Called once when a process first uses this node: connect, ensure pool/network."""

    @abstractmethod
    def define_vm(self, vm: VmSpec) -> None:
        """Register the VM with the engine (domain definition, container create)."""

    @abstractmethod
    def undefine_vm(self, vm: VmSpec) -> None:
        """Remove the definition; a missing one is not an error."""

    @abstractmethod
    def start_vm(self, vm: VmSpec) -> StartOutcome | None:
        """Boot a stopped VM; a running one is left alone. May say what it did (a
        StartOutcome: booted, restored from saved memory, resumed from a pause, running)."""

    def suspend_vm(self, vm: VmSpec) -> str:
        """Save a running VM's memory to disk and stop it (Feature.SUSPEND); the next
        start_vm resumes it where it was. Returns what was done, for the operation's log."""
        raise NotImplementedError(f"{type(self).__name__} cannot suspend a VM")

    def pause_vm(self, vm: VmSpec) -> str:
        """Stop the running VM's vCPUs, its memory kept where it is (Feature.SUSPEND): the next
        start_vm resumes it at once. Returns what was done."""
        raise NotImplementedError(f"{type(self).__name__} cannot pause a VM")

    def cut_disk(self, vm: VmSpec) -> DiskCut:
        """Cut the disk of the VM (running or stopped) for cloning (Feature.CLONE): what it
        holds now becomes a read-only base, and the VM goes on writing to a new overlay on
        it, in constant time whatever the disk's size. A running guest's filesystems are
        frozen by its agent meanwhile. The new overlay's name follows from
        `vm.runtime_image`, so a call made again after a crash finds the VM cut already
        and leaves it as it is."""
        raise unsupported(self.kind, Feature.CLONE)

    def memory_held(self, vm: VmSpec) -> int | None:
        """Bytes of the node's memory the VM holds now; None when unknown."""
        return None

    def tidy_parked(self, prefix: str, suspended: set[str], busy: set[str]) -> list[str]:
        """Reconciliation's pass over VMs whose restore the engine prepared ahead (libvirt's
        parked restores): those of VMs no longer `suspended` (nor `busy` in an operation)
        end, suspended ones not prepared are. Says what it did; nothing by default."""
        return []

    def disk_held(self, vm: VmSpec) -> int | None:
        """Bytes the VM holds on the node's disk (image, saved memory); None when unknown."""
        return None

    def disk_space(self) -> DiskSpace | None:
        """The size and free space of the filesystem holding the node's guest disks, for the
        node's heartbeat; None when the engine cannot say. Cheap: called on every beat."""
        return None

    def writable_sizes(self, prefix: str) -> dict[str, int] | None:
        """Bytes each VM named with `prefix` has written to its own writable storage, in one
        call for the whole node; None where disks bound themselves (`bounds_disks`)."""
        return None

    def wait_booted(self, vm: VmSpec, *, timeout: float) -> str:
        """Wait until the running VM's guest says it is up (a warm spare is saved only
        then); says how it told. Raises when it does not within `timeout` seconds."""
        raise NotImplementedError(f"{type(self).__name__} cannot tell when a guest is up")

    @abstractmethod
    def stop_vm(self, vm: VmSpec, *, force: bool = False) -> str:
        """Shut the VM down (gracefully unless forced); a stopped one is left alone.
        Says how it went ("by the guest agent", "forced off", …) for the operation's log."""

    @abstractmethod
    def update_vm(self, vm: VmSpec) -> None:
        """Apply a new config (CPU, memory, ...) to the defined VM."""

    @abstractmethod
    def power_state(self, vm: VmSpec) -> PowerState: ...

    @abstractmethod
    def guest_addresses(self, vm: VmSpec) -> list[tuple[str, str]] | None:
        """(interface, address/prefix) as the guest's own agent reports them; None when
        no agent answers (none in the guest, still booting, or the VM is not running)."""

    # --- what the node holds (reconciliation) ---------------------------
    @abstractmethod
    def inventory(self, prefix: str) -> Inventory:
        """Instances, runtime images and address reservations named with `prefix`
        (reservations: all of the node's network)."""

    @abstractmethod
    def remove_instance(self, name: str) -> None:
        """Power off and remove an instance no VM owns; a missing one is fine."""

    @abstractmethod
    def remove_image(self, name: str) -> None:
        """Remove a runtime image no VM owns; a missing one is fine."""

    @abstractmethod
    def set_reservation(self, mac: str, ip: str, name: str, *, present: bool) -> None:
        """Add (or remove) the DHCP reservation of one address; idempotent."""

    # --- meta (the seed's cache_meta / gen_vm_from_meta) ---------------
    def cache_meta(self, vm: VmSpec) -> dict:
        return vm.to_meta()

    def gen_vm_from_meta(self, meta: dict) -> VmSpec:
        return VmSpec.from_meta(meta)

    def console_log(self, vm_name: str, limit: int = 16_384) -> str | None:
        """The last `limit` bytes (whole lines) of the VM's serial console, as text, when
        this host can read them; None when the engine keeps no console log here. Needs
        no init(): the portal reads it on a page view, which must not set up a node."""
        return None

    # --- into a running guest (engines/guest_io.py), each behind its Feature ----------------
    # The caller checked the VM runs and its template has the feature: a driver raises
    # GuestPathMissing / GuestPathDenied / GuestUnreachable for what only the guest can tell.

    def exec(self, vm: VmSpec, request: ExecRequest, on_output: OutputSink | None = None) -> ExecResult:
        """Run `request.argv` in the running guest and wait for it (Feature.EXEC). Its output
        goes to `on_output` as it comes, when given, and is kept up to `output_limit` bytes
        a stream. Past `request.timeout` the process is killed: `timed_out`."""
        raise unsupported(self.kind, Feature.EXEC)

    def file_put(self, vm: VmSpec, path: str, chunks: Iterator[bytes], *, mode: int | None = None,
                 owner: str = "") -> int:
        """Write the file at `path` (absolute) from `chunks`, replacing one there; `mode`
        (permission bits) and `owner` ("user" or "user:group") when given. Returns the bytes
        written (Feature.FILES)."""
        raise unsupported(self.kind, Feature.FILES)

    def file_get(self, vm: VmSpec, path: str) -> GuestFile:
        """The file at `path`, to be read in chunks (Feature.FILES). Raises at once, before any
        chunk, when it is missing, a directory, or not readable."""
        raise unsupported(self.kind, Feature.FILES)

    def file_list(self, vm: VmSpec, path: str) -> list[FileEntry]:
        """The entries of the directory at `path` (Feature.FILES)."""
        raise unsupported(self.kind, Feature.FILES)

    def open_console(self, vm: VmSpec) -> ConsoleStream:
        """The running VM's interactive console (Feature.CONSOLE)."""
        raise unsupported(self.kind, Feature.CONSOLE)

    def health(self) -> tuple[bool, str]:
        """(usable, what was found) for the node's admin page: the engine answering, its
        version, what the host lacks. Cheap, and safe to call on a node not initialised."""
        return True, "no health check for this engine"

    def check_feat(self, wanted: set[Feature] | frozenset[Feature]) -> set[Feature]:
        """Return the wanted features this engine lacks (empty set: all supported)."""
        return set(wanted) - set(self.features)

    # --- composite flows, written once ---------------------------------
    def create_vm(self, vm: VmSpec, progress: Progress = _no_progress) -> str:
        """Image, definition, network; on failure undo whatever was done, then re-raise."""
        undo: list[Callable[[], None]] = []
        try:
            progress(10, "creating runtime image")
            with fails_as(ErrorCode.STORAGE_CREATE_IMAGE):
                image = self.create_image(vm)
            undo.append(lambda: self.destroy_image(vm.replace(runtime_image=image, keep_image=False)))
            vm = vm.replace(runtime_image=image)
            if vm.cloud_init is not None:
                progress(30, "writing the cloud-init seed")
                undo.append(lambda: self.destroy_seed(vm))
                with fails_as(ErrorCode.STORAGE_CREATE_IMAGE):
                    self.create_seed(vm)
            progress(40, "defining VM")
            with fails_as(ErrorCode.DEFINE_VM):
                self.define_vm(vm)
            undo.append(lambda: self.undefine_vm(vm))
            # Before, not after: a set_net that fails half-way (DHCP entry added,
            # firewall refused) must be undone too; unset_net is idempotent.
            undo.append(lambda: self.unset_net(vm))
            progress(70, "wiring network")
            with fails_as(ErrorCode.FIREWALL_SET_NET):
                self.set_net(vm)
                if vm.deny_outgoing:
                    self.deny_outgoing(vm)
                if vm.blacklist:
                    self.set_blacklist(vm)
            return image
        except Exception:
            self._undo(undo, vm)
            raise

    def _undo(self, undo: list[Callable[[], None]], vm: VmSpec) -> None:
        for action in reversed(undo):
            try:
                action()
            except Exception:  # keep undoing: one leftover is better than several
                log.exception("roll-back step failed for %s", vm.name)

    def destroy_vm(self, vm: VmSpec, progress: Progress = _no_progress) -> None:
        """Power off, remove definition, image (unless keep_image) and network. Idempotent."""
        progress(10, "powering off")
        with fails_as(ErrorCode.STOP_VM):
            if self.power_state(vm) == PowerState.RUNNING:
                self.stop_vm(vm, force=True)
        progress(40, "removing definition")
        with fails_as(ErrorCode.UNDEFINE_VM):
            self.undefine_vm(vm)
        progress(60, "removing runtime image")
        with fails_as(ErrorCode.STORAGE_DESTROY_IMAGE):
            if not vm.keep_image:
                self.destroy_image(vm)
            self.destroy_seed(vm)  # first-boot data, never kept
        progress(80, "removing network")
        with fails_as(ErrorCode.FIREWALL_UNSET_NET):
            self.unset_net(vm)

    def _stop_if_running(self, vm: VmSpec, progress: Progress) -> bool:
        """Storage changes need a stopped VM (a consistent disk); say whether it ran."""
        with fails_as(ErrorCode.STOP_VM):
            was_running = self.power_state(vm) == PowerState.RUNNING
            if was_running:
                progress(10, "stopping VM")
                progress(20, f"VM {self.stop_vm(vm)}")
        return was_running

    def _restore_power(self, vm: VmSpec, running: bool, progress: Progress) -> None:
        if running:
            progress(90, "restarting VM")
            with fails_as(ErrorCode.START_VM):
                self.start_vm(vm)

    def _restore_power_after_failure(self, vm: VmSpec, running: bool) -> None:
        """Best effort, and never in place of the failure being raised: the caller then
        records the power state the engine really reports."""
        if not running:
            return
        try:
            self.start_vm(vm)
        except Exception:
            log.exception("could not restart %s after a failed storage change", vm.name)

    def create_snapshot(
        self, vm: VmSpec, name: str, progress: Progress = _no_progress, *, running_after: bool | None = None
    ) -> SnapshotResult:
        """Snapshot the VM, consistently, and leave it in the power state it had.

        A running VM whose guest agent answers is snapshotted live, its filesystems
        frozen meanwhile (no stop, no reboot). Any other is stopped, snapshotted and
        started again. The operation's log says which path was taken. `running_after`
        is the power state to leave it in; a resumed operation passes the state the VM
        had before the first attempt stopped it.
        """
        with fails_as(ErrorCode.META_CREATE_CACHE):
            meta = self.cache_meta(vm)
        with fails_as(ErrorCode.STOP_VM):
            running_now = self.power_state(vm) == PowerState.RUNNING
        if running_now:
            progress(20, "asking the guest agent to freeze the filesystems")
            with fails_as(ErrorCode.SNAPSHOT_CREATE):
                path = self.storage_snapshot_live(vm, name)
            if path is not None:
                progress(90, "snapshot taken live: filesystems frozen by the guest agent, then thawed")
                return SnapshotResult(path=path, meta=meta)
            progress(25, "no guest agent answered: stopping the VM for a consistent snapshot")
        was_running = self._stop_if_running(vm, progress)
        running = was_running if running_after is None else running_after
        try:
            progress(60, "snapshotting storage (VM stopped)")
            with fails_as(ErrorCode.SNAPSHOT_CREATE):
                path = self.storage_create_snapshot(vm, name)
        except Exception:
            self._restore_power_after_failure(vm, running)
            raise
        self._restore_power(vm, running, progress)
        return SnapshotResult(path=path, meta=meta)

    def destroy_snapshot(self, vm: VmSpec, snapshot: SnapshotSpec) -> None:
        with fails_as(ErrorCode.SNAPSHOT_DESTROY):
            self.storage_destroy_snapshot(vm, snapshot)

    def apply_snapshot(
        self, vm: VmSpec, snapshot: SnapshotSpec, progress: Progress = _no_progress, *,
        running_after: bool | None = None,
    ) -> VmSpec:
        """Stop, restore meta, revert storage, update, restore power state. Returns the restored VM.

        On failure the VM is started again if it ran (as create_snapshot does), on
        whatever disk it then has: a revert either happened whole or not at all.
        """
        was_running = self._stop_if_running(vm, progress)
        running = was_running if running_after is None else running_after
        restored = vm
        try:
            progress(30, "restoring config")
            with fails_as(ErrorCode.META_RESTORE_CACHE):
                cached = self.gen_vm_from_meta(snapshot.meta)
                # What the snapshot cannot change: identity and the current wiring
                # (addresses, ports and egress policy belong to the Env as it is now).
                restored = vm.replace(
                    cpu_num=cached.cpu_num, mem_mb=cached.mem_mb, disk_mb=cached.disk_mb
                )
            progress(50, "reverting storage")
            with fails_as(ErrorCode.SNAPSHOT_APPLY):
                self.storage_apply_snapshot(restored, snapshot)
            progress(70, "updating VM")
            with fails_as(ErrorCode.UPDATE_VM):
                self.update_vm(restored)
        except Exception:
            self._restore_power_after_failure(vm, running)
            raise
        self._restore_power(restored, running, progress)
        return restored
