"""Firecracker microVMs: one firecracker process per running VM, driven through its API socket.

Firecracker keeps nothing between processes: a VM is what define_vm wrote in its
state directory (engines/firecracker/layout.py), a start is a new process
configured from scratch (boot source, drives, machine config, network interface,
then InstanceStart, which a process accepts once), and a stop ends the process.
The guest takes its address from the kernel command line (`ip=`), since the IP is
derived from the MAC: there is no DHCP. Its tap is named by engines.specs.tap_name,
the port the node's firewall binds the VM to (FirewalledNetwork does the rest).

Snapshots: a running VM is paused, Firecracker writes a Full snapshot (device
state + memory), the disk is copied while paused, and the VM resumes. A stopped
VM's snapshot is its disk. Applying a snapshot restores its disk; when it has
memory, the next start of the VM resumes it instead of booting (see
storage_apply_snapshot for a VM that was stopped when it was applied).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from engines import cloudinit
from engines.base import VmEngine
from engines.errors import EngineError, ErrorCode, fails_as
from engines.firecracker import files, process, schemas
from engines.firecracker.api import FirecrackerApi, FirecrackerApiError
from engines.firecracker.host import find_binary, runtime_problems
from engines.firecracker.hostnet import HostNetwork
from engines.firecracker.jail import Launch, Placement, direct_launch, jailed_launch
from engines.firecracker.layout import IMAGE_SUFFIX, SEED_SUFFIX, Layout, safe_name
from engines.firecracker.process import ProcessRecord
from engines.libvirt.console import read_console_tail
from engines.network.firewall import Firewall, MemoryFirewall
from engines.network.wiring import FirewalledNetwork
from engines.node_options import NodeOptions
from engines.specs import DiskSpace, Feature, Inventory, PowerState, SnapshotSpec, VmSpec, tap_name

log = logging.getLogger(__name__)
MIB = 1024 * 1024
# Firecracker's getting-started command line: serial console, reboot = exit (so a
# guest that powers off or reboots ends its process), no PCI probing.
DEFAULT_BOOT_ARGS = "console=ttyS0 reboot=k panic=1 pci=off"
ROOT_DRIVE, SEED_DRIVE, IFACE = "rootfs", "seed", "eth0"
CONSOLE_ROTATE_BYTES = 4 * MIB  # a console log this big is moved aside (one previous kept) at start


class VmNotDefined(LookupError):
    """The VM has no state directory on this node."""


@dataclass(frozen=True)
class RunningVm:
    """A VM's live process: its API, how it sees files, and the machine it runs."""

    record: ProcessRecord
    api: FirecrackerApi
    placement: Placement
    machine: dict  # {"vcpu_count", "mem_size_mib"} it was started or resumed with


class FirecrackerEngine(FirewalledNetwork, VmEngine):
    kind = "firecracker"
    features = frozenset(
        {Feature.SNAPSHOT, Feature.START_STOP, Feature.NAT, Feature.FLAT, Feature.KEEP_IMAGE,
         Feature.DISK_LIMIT}
    )
    # A reflink where the filesystem has them, else a whole copy: counted as a copy.
    copies_template = True

    def __init__(self, *, uri: str, options: NodeOptions | None = None):
        super().__init__(uri=uri, options=options)
        opts = self.options
        self.layout = Layout(Path(opts.pool_path or "/var/lib/ttportal/pools/tt-pool"), opts.console_dir)
        self.bridge = opts.bridge
        self.vm_network = ipaddress.IPv4Network(opts.vm_network)
        self.gateway_ip = opts.gateway_ip or str(self.vm_network.network_address + 1)
        self.stop_timeout = float(opts.stop_timeout)
        # How long a new process gets to answer on its socket (the jailer's chroot included).
        self.api_timeout = float(opts.api_timeout)
        self.binary = opts.binary
        self.jailer = opts.jailer
        self.firewall: Firewall = opts.firewall or MemoryFirewall()
        self.hostnet: HostNetwork = opts.hostnet or HostNetwork()

    # --- node -----------------------------------------------------------------------
    def init(self) -> None:
        """The node's directories, its bridge holding the gateway address, its firewall."""
        with fails_as(ErrorCode.ENGINE_INIT):
            self.layout.vms_dir.mkdir(parents=True, exist_ok=True)
            if self.jailer:
                self.layout.jail_base.mkdir(exist_ok=True)
            if self.layout.console_dir:
                os.makedirs(self.layout.console_dir, exist_ok=True)
            self.hostnet.ensure_bridge(self.bridge, f"{self.gateway_ip}/{self.vm_network.prefixlen}")
            self.firewall.ensure()

    def disk_space(self) -> DiskSpace | None:
        """The filesystem of the node's pool directory (images, seeds, snapshots)."""
        try:
            return DiskSpace.of_path(str(self.layout.pool))
        except OSError:
            return None

    def health(self) -> tuple[bool, str]:
        problems, found = runtime_problems(self.binary, self.jailer)
        if problems:
            return False, "; ".join(problems)
        return True, found

    # --- definition -----------------------------------------------------------------
    def define_vm(self, vm: VmSpec) -> None:
        """Record what the VM is; its boot configuration is checked against the contract now,
        so a VM Firecracker would refuse (too many vCPUs, no kernel) is refused at once."""
        with fails_as(ErrorCode.DEFINE_VM):
            self._check_boot_config(vm)
            self.layout.state_dir(vm.name).mkdir(parents=True, exist_ok=True)
            files.write_json(self.layout.definition(vm.name), vm.to_meta())

    def update_vm(self, vm: VmSpec) -> None:
        """A new definition, for the next start (a running process keeps what it booted with)."""
        with fails_as(ErrorCode.UPDATE_VM):
            self._definition(vm.name)
            self._check_boot_config(vm)
            files.write_json(self.layout.definition(vm.name), vm.to_meta())
            image = self._image_of(vm)
            if image.exists():
                files.grow_file(image, vm.disk_mb * MIB)
            restore = self._pending_restore(vm.name)
            if restore and (restore["vcpu_count"], restore["mem_size_mib"]) != (vm.cpu_num, vm.mem_mb):
                # A memory snapshot resumes with the CPUs and memory it was taken with: the
                # new size wins, and the next start boots the restored disk instead.
                log.warning("%s: resized; the applied snapshot's memory is dropped, it will boot", vm.name)
                files.remove_tree(self.layout.restore_dir(vm.name))

    def undefine_vm(self, vm: VmSpec) -> None:
        with fails_as(ErrorCode.UNDEFINE_VM):
            self.remove_instance(vm.name)

    def _definition(self, name: str) -> VmSpec:
        meta = files.read_json(self.layout.definition(name))
        if meta is None:
            raise VmNotDefined(f"VM {name} is not defined on this node ({self.layout.state_dir(name)})")
        return VmSpec.from_meta(meta)

    def _check_boot_config(self, vm: VmSpec) -> None:
        for method, template, _params, body in self._boot_calls(vm, Placement(None)):
            schemas.body_for(method, template, body)

    # --- lifecycle ------------------------------------------------------------------
    def power_state(self, vm: VmSpec) -> PowerState:
        if not self.layout.definition(vm.name).exists():
            return PowerState.MISSING
        return PowerState.RUNNING if self._live_process(vm.name) else PowerState.STOPPED

    def start_vm(self, vm: VmSpec) -> None:
        """A new process: the applied snapshot's memory resumed if one waits, else a boot."""
        with fails_as(ErrorCode.START_VM):
            spec = self._definition(vm.name)
            if self._live_process(vm.name) is not None:
                return
            self._clean_after_process(vm.name)  # what a process that ended by itself left
            launch = self._launch(vm.name)
            launch.prepare()
            self._rotate_console(vm.name)
            restore = self._pending_restore(vm.name)
            machine = {"vcpu_count": spec.cpu_num, "mem_size_mib": spec.mem_mb}
            if restore:
                machine = {"vcpu_count": restore["vcpu_count"], "mem_size_mib": restore["mem_size_mib"]}
            self.hostnet.add_tap(spec.tap, self.bridge)
            try:
                record = process.launch(launch.argv, vm_name=vm.name, log_path=self.layout.console(vm.name),
                                        cwd=launch.cwd)
                files.write_json(self.layout.process_record(vm.name), {
                    **record.to_json(), "api_socket": str(launch.api_socket),
                    "jail_root": str(launch.placement.root or ""), "machine": machine,
                })
                api = self._wait_for_api(record, launch.api_socket)
                if restore:
                    self._resume_snapshot(api, spec, launch.placement)
                else:
                    self._boot(api, spec, launch.placement)
            except BaseException:
                self._end_process(vm.name)
                raise

    def _boot(self, api: FirecrackerApi, vm: VmSpec, placement: Placement) -> None:
        for _method, template, params, body in self._boot_calls(vm, placement):
            api.put(template, body, **params)  # every pre-boot call is a PUT
        api.put("/actions", {"action_type": "InstanceStart"})

    def _boot_calls(self, vm: VmSpec, placement: Placement) -> list[tuple[str, str, dict, dict]]:
        """The pre-boot configuration of a fresh process, in order: (method, path, params, body)."""
        template = vm.template
        if not template.kernel:
            raise ValueError(f"template {template.name!r} names no kernel: Firecracker boots one directly")
        kernel = placement.expose(self._pool_file(template.kernel), "vmlinux", writable=False)
        boot = {"kernel_image_path": kernel, "boot_args": self._boot_args(vm)}
        if template.initrd:
            boot["initrd_path"] = placement.expose(self._pool_file(template.initrd), "initrd", writable=False)
        calls = [("PUT", "/boot-source", {}, boot)]
        calls += [("PUT", "/drives/{drive_id}", {"drive_id": drive["drive_id"]}, drive)
                  for drive in self._drives(vm, placement)]
        calls.append(("PUT", "/machine-config", {}, {"vcpu_count": vm.cpu_num, "mem_size_mib": vm.mem_mb}))
        calls.append(("PUT", "/network-interfaces/{iface_id}", {"iface_id": IFACE},
                      {"iface_id": IFACE, "host_dev_name": vm.tap, "guest_mac": vm.mac}))
        return calls

    def _drives(self, vm: VmSpec, placement: Placement) -> list[dict]:
        """The root image (written by the guest) and, with cloud-init, the seed (read-only).
        Their paths are part of a memory snapshot: a resumed VM finds them at the same ones."""
        drives = [{
            "drive_id": ROOT_DRIVE, "is_root_device": True, "is_read_only": False,
            "path_on_host": placement.expose(self._image_of(vm), "rootfs.ext4", writable=True),
        }]
        if vm.cloud_init is not None:
            drives.append({
                "drive_id": SEED_DRIVE, "is_root_device": False, "is_read_only": True,
                "path_on_host": placement.expose(self.layout.seed(vm.name), "seed.img", writable=False),
            })
        return drives

    def _boot_args(self, vm: VmSpec) -> str:
        """The template's command line with the VM's static address (the IP comes from the MAC:
        `ip=<ip>::<gateway>:<netmask>::eth0:off`, the kernel's own configuration, no DHCP)."""
        cmdline = vm.template.cmdline.strip() or DEFAULT_BOOT_ARGS
        words = [w for w in cmdline.split() if not w.startswith("ip=")]
        words.append(f"ip={vm.ip}::{self.gateway_ip}:{self.vm_network.netmask}::{IFACE}:off")
        return " ".join(words)

    def _resume_snapshot(self, api: FirecrackerApi, vm: VmSpec, placement: Placement) -> None:
        """Load the applied snapshot: the first call of this fresh process, as Firecracker requires."""
        restore = self.layout.restore_dir(vm.name)
        self._drives(vm, placement)  # in a jail, the disks at the paths the snapshot recorded
        api.put("/snapshot/load", {
            "snapshot_path": placement.expose(restore / "vm.state", "snapshot.state", writable=False),
            "mem_backend": {
                "backend_type": "File",
                "backend_path": placement.expose(restore / "vm.mem", "snapshot.mem", writable=False),
            },
            # Its tap by name (the same one; the MAC cannot change, and needs not).
            "network_overrides": [{"iface_id": IFACE, "host_dev_name": vm.tap}],
            "resume_vm": True,
        })
        # Consumed: the next start boots. The files stay while this process runs (its
        # memory is mapped from vm.mem) and go when it ends.
        restore_record = self.layout.restore_dir(vm.name) / "restore.json"
        files.write_json(restore_record, {**(files.read_json(restore_record) or {}), "loaded": True})

    def stop_vm(self, vm: VmSpec, *, force: bool = False) -> str:
        """Ctrl+Alt+Del (the guest reboots, and `reboot=k` ends the process), the process
        ended after `stop_timeout`; forced: ended at once."""
        with fails_as(ErrorCode.STOP_VM):
            running = self._live_process(vm.name)
            if running is None:
                self._clean_after_process(vm.name)
                return "already stopped"
            if force:
                self._end_process(vm.name)
                return "forced off"
            try:
                running.api.put("/actions", {"action_type": "SendCtrlAltDel"})
            except (FirecrackerApiError, OSError) as exc:
                self._end_process(vm.name)
                return f"forced off (Ctrl+Alt+Del refused: {exc})"
            if process.wait_until_ended(running.record, self.stop_timeout):
                self._clean_after_process(vm.name)
                return "shut down when sent Ctrl+Alt+Del"
            self._end_process(vm.name)
            return f"forced off after {self.stop_timeout:g} s (sent Ctrl+Alt+Del)"

    def guest_addresses(self, vm: VmSpec) -> list[tuple[str, str]] | None:
        return None  # no guest agent channel

    # --- processes ------------------------------------------------------------------
    def _launch(self, name: str) -> Launch:
        binary = find_binary(self.binary, "firecracker")
        if binary is None:
            named = self.binary or "firecracker (on PATH)"
            raise FileNotFoundError(f"the firecracker binary {named} is not found")
        if not self.jailer:
            return direct_launch(binary, self.layout.state_dir(name), name)
        jailer = find_binary(self.jailer, "jailer")
        if jailer is None:
            raise FileNotFoundError(f"the jailer binary {self.jailer} is not found")
        self.layout.jail_base.mkdir(parents=True, exist_ok=True)
        return jailed_launch(jailer, binary, self.layout.jail_base, name)

    def _live_process(self, name: str) -> RunningVm | None:
        """The VM's process when it runs (and is really its own: see process.is_running)."""
        data = files.read_json(self.layout.process_record(name))
        if data is None:
            return None
        record = ProcessRecord.from_json(data)
        if not process.is_running(record):
            return None
        root = data.get("jail_root") or ""
        return RunningVm(
            record=record, api=FirecrackerApi(data["api_socket"]),
            placement=Placement(Path(root) if root else None), machine=dict(data.get("machine") or {}),
        )

    def _wait_for_api(self, record: ProcessRecord, api_socket: Path) -> FirecrackerApi:
        """Poll until the new process answers on its socket; say why when it never does."""
        api = FirecrackerApi(str(api_socket))
        deadline = time.monotonic() + self.api_timeout
        pause = 0.002
        while True:
            if not process.is_running(record):
                tail = read_console_tail(str(self.layout.console(record.vm_name)), 2000).strip()
                raise RuntimeError(f"firecracker ended as it started: {tail or 'no output'}")
            if api_socket.exists():
                with contextlib.suppress(OSError, http.client.HTTPException):
                    api.get("/", timeout=1.0)
                    return api
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"firecracker did not answer on {api_socket} within {self.api_timeout:g} s"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _end_process(self, name: str) -> None:
        """End the VM's process (if it runs) and remove what it used."""
        running = self._live_process(name)
        if running is not None:
            process.kill(running.record)
        self._clean_after_process(name)

    def _clean_after_process(self, name: str) -> None:
        """What a process leaves when it ends: its tap, socket, record, chroot, and the
        memory snapshot it was resumed from. Only called once it has ended."""
        self.hostnet.remove_tap(tap_name(name))
        state = self.layout.state_dir(name)
        files.remove_file(state / "api.sock")
        files.remove_file(self.layout.process_record(name))
        for instance in self.layout.jail_instances(name):
            files.remove_tree(instance)
        restore = files.read_json(self.layout.restore_dir(name) / "restore.json")
        if restore is not None and restore.get("loaded"):
            files.remove_tree(self.layout.restore_dir(name))

    def _rotate_console(self, name: str) -> None:
        console = self.layout.console(name)
        with contextlib.suppress(FileNotFoundError):
            if console.stat().st_size > CONSOLE_ROTATE_BYTES:
                os.replace(console, console.with_name(console.name + ".1"))

    def console_log(self, vm_name: str, limit: int = 16_384) -> str | None:
        return read_console_tail(str(self.layout.console(vm_name)), limit)

    # --- storage --------------------------------------------------------------------
    def _pool_file(self, path: str) -> Path:
        """A template's file: an absolute path, or a name in the node's pool directory."""
        return Path(path) if path.startswith("/") else self.layout.pool / safe_name(path, "template file")

    def _image_of(self, vm: VmSpec) -> Path:
        return Path(vm.runtime_image) if vm.runtime_image else self.layout.image(vm.name)

    def create_image(self, vm: VmSpec) -> str:
        """A copy-on-write copy of the template's ext4 root (a reflink where the filesystem
        has them), grown to disk_mb: the guest grows its filesystem (cloud-init's resizefs)."""
        with fails_as(ErrorCode.STORAGE_CREATE_IMAGE):
            image = self.layout.image(vm.name)
            if image.exists():  # a retried task: it was made whole (copies land by rename)
                return str(image)
            template = self._pool_file(vm.template.path)
            size = template.stat().st_size
            if vm.disk_mb * MIB < size:
                raise EngineError(
                    f"disk_size {vm.disk_mb} MiB is smaller than template {vm.template.name!r} "
                    f"({-(-size // MIB)} MiB)", code=ErrorCode.STORAGE_CREATE_IMAGE,
                )
            partial = files.partial_of(image)
            files.clone_file(template, partial)
            files.grow_file(partial, vm.disk_mb * MIB)
            os.replace(partial, image)
            return str(image)

    def destroy_image(self, vm: VmSpec) -> None:
        with fails_as(ErrorCode.STORAGE_DESTROY_IMAGE):
            image = self.layout.image(vm.name)
            files.remove_file(image)
            files.remove_file(files.partial_of(image))

    def create_seed(self, vm: VmSpec) -> None:
        """The NoCloud CIDATA image, attached read-only as the second drive at each start."""
        with fails_as(ErrorCode.STORAGE_CREATE_IMAGE):
            seed = self.layout.seed(vm.name)
            partial = files.partial_of(seed)
            cloudinit.write_seed(vm.cloud_init, partial)
            os.replace(partial, seed)

    def destroy_seed(self, vm: VmSpec) -> None:
        with fails_as(ErrorCode.STORAGE_DESTROY_IMAGE):
            seed = self.layout.seed(vm.name)
            files.remove_file(seed)
            files.remove_file(files.partial_of(seed))

    # --- snapshots ------------------------------------------------------------------
    def _snapshot_dir(self, vm: VmSpec, snapshot: SnapshotSpec | str) -> Path:
        """The snapshot's directory, from its reference (its path) or its name; only ever one
        of this VM's snapshot directories, whatever the reference says."""
        if isinstance(snapshot, str):
            return self.layout.snapshot_dir(vm.name, snapshot)
        return self.layout.snapshot_dir(vm.name, Path(snapshot.path).name if snapshot.path else snapshot.name)

    @staticmethod
    def _is_complete(snapshot_dir: Path) -> bool:
        return (snapshot_dir / "snapshot.json").exists()

    def _start_snapshot(self, final: Path) -> Path:
        """A fresh directory to build a snapshot in; renamed to `final` once whole."""
        files.remove_tree(final)  # never a whole one: those return early
        partial = files.partial_of(final)
        files.remove_tree(partial)
        partial.mkdir(parents=True)
        return partial

    def _finish_snapshot(self, vm: VmSpec, partial: Path, final: Path, *, memory: dict | None) -> str:
        files.write_json(partial / "snapshot.json", {
            "vm": vm.name, "name": final.name, "memory": memory,
        })
        os.replace(partial, final)
        return str(final)

    def storage_create_snapshot(self, vm: VmSpec, name: str) -> str:
        """A stopped VM: its disk. A VM with an applied memory snapshot waiting to resume
        is that snapshot's state, so its memory goes into this one too."""
        with fails_as(ErrorCode.SNAPSHOT_CREATE):
            if self._live_process(vm.name) is not None:
                raise RuntimeError(f"{vm.name} runs: a stopped snapshot needs it stopped")
            final = self._snapshot_dir(vm, name)
            if self._is_complete(final):
                return str(final)  # a retried task already made it
            partial = self._start_snapshot(final)
            files.clone_file(self._image_of(vm), partial / "disk.ext4")
            memory = None
            pending = self._pending_restore(vm.name)
            if pending:
                restore = self.layout.restore_dir(vm.name)
                for part in ("vm.state", "vm.mem"):
                    files.link_or_copy(restore / part, partial / part)
                memory = {"vcpu_count": pending["vcpu_count"], "mem_size_mib": pending["mem_size_mib"]}
            return self._finish_snapshot(vm, partial, final, memory=memory)

    def storage_snapshot_live(self, vm: VmSpec, name: str) -> str | None:
        """Paused, a Full snapshot (device state + memory) and a copy of the disk, resumed.
        No guest agent needed: the guest is consistent with its own memory. None when the
        process is gone (the flow then takes a stopped snapshot)."""
        with fails_as(ErrorCode.SNAPSHOT_CREATE):
            running = self._live_process(vm.name)
            if running is None:
                return None
            api, placement = running.api, running.placement
            final = self._snapshot_dir(vm, name)
            if self._is_complete(final):
                return str(final)
            partial = self._start_snapshot(final)
            api.patch("/vm", {"state": "Paused"})
            try:
                api.put("/snapshot/create", {
                    "snapshot_type": "Full",
                    "snapshot_path": placement.output("vm.state", partial / "vm.state"),
                    "mem_file_path": placement.output("vm.mem", partial / "vm.mem"),
                })
                placement.collect("vm.state", partial / "vm.state")
                placement.collect("vm.mem", partial / "vm.mem")
                files.clone_file(self._image_of(vm), partial / "disk.ext4")  # consistent: the guest is paused
            except BaseException:
                self._resume_after_failure(api, vm)
                raise
            api.patch("/vm", {"state": "Resumed"})
            memory = running.machine or {"vcpu_count": vm.cpu_num, "mem_size_mib": vm.mem_mb}
            return self._finish_snapshot(vm, partial, final, memory=memory)

    @staticmethod
    def _resume_after_failure(api: FirecrackerApi, vm: VmSpec) -> None:
        try:
            api.patch("/vm", {"state": "Resumed"})
        except Exception:  # the failure being raised says more than this one
            log.exception("%s: could not resume the VM after a failed snapshot", vm.name)

    def thaw_guest(self, vm: VmSpec) -> None:
        """Nothing is frozen: a live snapshot pauses the VM and always resumes it."""

    def storage_apply_snapshot(self, vm: VmSpec, snapshot: SnapshotSpec) -> None:
        """The snapshot's disk becomes the VM's. With memory, the next start resumes the guest
        where the snapshot was taken, whenever that start comes: a VM that was stopped when
        the snapshot was applied stays stopped, and its next start resumes that memory (the
        disk copy belongs with it, and on its own is only as consistent as after a power
        cut). A snapshot without memory leaves the next start a cold boot."""
        with fails_as(ErrorCode.SNAPSHOT_APPLY):
            if self._live_process(vm.name) is not None:
                raise RuntimeError(f"{vm.name} runs: a snapshot is applied to a stopped VM")
            source = self._snapshot_dir(vm, snapshot)
            if not self._is_complete(source):
                raise FileNotFoundError(f"snapshot {snapshot.name} of {vm.name} has no data on this node")
            restore = self.layout.restore_dir(vm.name)
            # The memory goes first and comes back last: a cut-short apply must never leave
            # one snapshot's memory to resume over another disk.
            files.remove_tree(restore)
            files.clone_file(source / "disk.ext4", self._image_of(vm))
            memory = (files.read_json(source / "snapshot.json") or {}).get("memory")
            if memory and (source / "vm.mem").exists():
                partial = files.partial_of(restore)
                files.remove_tree(partial)
                partial.mkdir()
                # Hard links: Firecracker never writes them, and they outlive the snapshot.
                for part in ("vm.state", "vm.mem"):
                    files.link_or_copy(source / part, partial / part)
                record = {"snapshot": snapshot.name, **memory, "loaded": False}
                files.write_json(partial / "restore.json", record)
                os.replace(partial, restore)

    def storage_destroy_snapshot(self, vm: VmSpec, snapshot: SnapshotSpec) -> None:
        with fails_as(ErrorCode.SNAPSHOT_DESTROY):
            found = self._snapshot_dir(vm, snapshot)
            files.remove_tree(found)
            files.remove_tree(files.partial_of(found))

    def _pending_restore(self, name: str) -> dict | None:
        restore = files.read_json(self.layout.restore_dir(name) / "restore.json")
        return restore if restore is not None and not restore.get("loaded") else None

    # --- what the node holds ------------------------------------------------------
    def inventory(self, prefix: str) -> Inventory:
        vms_dir = self.layout.vms_dir
        states = vms_dir.iterdir() if vms_dir.is_dir() else ()
        instances = frozenset(d.name for d in states if d.is_dir() and d.name.startswith(prefix))
        images: dict[str, str] = {}
        pool = self.layout.pool
        for f in pool.iterdir() if pool.is_dir() else ():
            if not (f.name.startswith(prefix) and f.is_file()):
                continue
            for suffix in (IMAGE_SUFFIX, SEED_SUFFIX):
                for ending in (suffix, suffix + files.PARTIAL):
                    if f.name.endswith(ending):
                        images[f.name] = f.name.removesuffix(ending)
        return Inventory(instances=instances, images=images, reservations=None)  # booted with its address

    def remove_instance(self, name: str) -> None:
        """End its process, remove its tap, state (snapshots included) and console log."""
        self._end_process(name)
        files.remove_tree(self.layout.state_dir(name))
        console = self.layout.console(name)
        for log_file in (console, console.with_name(console.name + ".1")):
            files.remove_file(log_file)

    def remove_image(self, name: str) -> None:
        files.remove_file(self.layout.pool / safe_name(name, "image name"))

    def set_reservation(self, mac: str, ip: str, name: str, *, present: bool) -> None:
        """No DHCP: a guest takes its address from its kernel command line."""
