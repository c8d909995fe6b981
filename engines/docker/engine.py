"""Containers as VMs, through the Docker Engine API (the `docker` SDK), served by podman here.

A container is the VM: created (never `run`, which pulls) from the template's local
image on the node's bridge network, with its fixed MAC and IP in the network's
*endpoint config* (podman 4.3 ignores the top-level MacAddress), its name, labels
and limits. Its writable layer is its runtime image: a reference, not a file.
Snapshots are commits to `tt/vm-<id>:snap-<name>`; applying one recreates the
container from that image with the same name, labels, address and limits.

Forwarded ports, egress denial, the blacklist and isolation are the node's
nftables table, exactly as for QEMU nodes (FirewalledNetwork): nothing is
published through the engine. The one step of our own: after each start, the
host end of the container's veth pair is renamed to the VM's port name, which
the bridge rules bind the VM to (engines.docker.hostport).
"""

from __future__ import annotations

import contextlib
import errno
import io
import ipaddress
import json
import logging
import tarfile
import threading
import time
from collections.abc import Iterator

import docker
import requests
from docker.errors import APIError, ImageNotFound, NotFound

from engines.base import VmEngine
from engines.docker import guest_exec, guest_files, hostport, runc_exec
from engines.docker.console_stream import DockerConsole
from engines.errors import EngineError, ErrorCode, fails_as
from engines.guest_io import (
    ConsoleStream,
    ExecRequest,
    ExecResult,
    FileEntry,
    GuestFile,
    GuestPathMissing,
    OutputSink,
)
from engines.libvirt.host import allow_loopback_forwarding
from engines.network.firewall import Firewall, MemoryFirewall
from engines.network.wiring import FirewalledNetwork
from engines.node_options import NodeOptions
from engines.retry import retry
from engines.specs import DiskSpace, Feature, Inventory, PowerState, SnapshotSpec, VmSpec

log = logging.getLogger(__name__)

API_VERSION = "1.41"  # what podman 4.3 serves; the SDK must not ask for more
LABEL_VM, LABEL_ENV, LABEL_NODE = "tt.vm", "tt.env", "tt.node"
CPU_PERIOD = 100_000  # µs; cpu_num vCPUs = cpu_num periods of CPU time per period
EXEC_PATHS = ("auto", "api", "runc")


class ContainerMissing(LookupError):
    """The VM has no container on the node."""


def snapshot_repository(vm: VmSpec) -> str:
    return f"tt/vm-{vm.id}"


def snapshot_reference(vm: VmSpec, name: str) -> str:
    return f"{snapshot_repository(vm)}:snap-{name}"


def base_reference(vm: VmSpec) -> str:
    """The image the VM's container is made from when it is no longer the template's
    (after a snapshot was applied or its limits changed): one tag per VM, moved each time."""
    return f"{snapshot_repository(vm)}:base"


def kept_reference(vm: VmSpec) -> str:
    """Where keep_image leaves the container's last state when the VM is destroyed."""
    return f"{snapshot_repository(vm)}:kept"


class DockerEngine(FirewalledNetwork, VmEngine):
    kind = "docker"
    # DISK_LIMIT: a container may write its disk_mb to its writable layer, and no more: the
    # storage driver limits the layer where it can (layer_limit_supported); elsewhere the
    # disk watchdog (vms/disk_watch.py) reads writable_sizes and stops one past it.
    features = frozenset(
        {Feature.SNAPSHOT, Feature.START_STOP, Feature.NAT, Feature.FLAT, Feature.RAND_UUID,
         Feature.KEEP_IMAGE, Feature.DISK_LIMIT, Feature.EXEC, Feature.FILES, Feature.CONSOLE}
    )
    bounds_disks = False

    def __init__(self, *, uri: str, options: NodeOptions | None = None):
        super().__init__(uri=uri, options=options)
        opts = self.options
        self.network_name = opts.network_name
        self.bridge = opts.bridge
        self.vm_network = opts.vm_network
        self.gateway_ip = opts.gateway_ip or str(ipaddress.IPv4Network(opts.vm_network).network_address + 1)
        self.node_name = opts.node_name
        self.stop_timeout = int(opts.stop_timeout)
        self.firewall: Firewall = opts.firewall or MemoryFirewall()
        self._client: docker.DockerClient | None = None
        self._storage: dict | None = None  # the engine's storage (info()), read once
        # Whether containers get a size limit on their writable layer: asked of the storage
        # driver once, and dropped for good if the engine refuses one anyway.
        self.limits_layers: bool | None = None
        # How commands reach containers (TT_DOCKER_EXEC): "auto" settles on runc or the API
        # at the first command (_exec_target), and says which in the log, once.
        if opts.docker_exec not in EXEC_PATHS:
            raise EngineError(f"docker_exec must be one of {', '.join(EXEC_PATHS)}, got {opts.docker_exec!r}",
                              code=ErrorCode.INVALID, field="docker_exec")
        self.exec_mode = opts.docker_exec
        # auto's finding at the first command: runc (True) or the API (False); None before it
        self._runc_wins: bool | None = None if self.exec_mode == "auto" else self.exec_mode == "runc"
        self._fallback_said = False
        self._exec_lock = threading.Lock()
        self._runtime_path: str | None = None

    # --- plumbing -------------------------------------------------------------
    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            # Longer than a stop may take: container.stop waits for it in one request.
            timeout = max(120, self.stop_timeout + 60)
            self._client = docker.DockerClient(base_url=self.uri, version=API_VERSION, timeout=timeout)
        return self._client

    def _container(self, name: str):
        try:
            return self.client.containers.get(name)
        except NotFound:
            return None

    def _require_container(self, vm: VmSpec):
        container = self._container(vm.name)
        if container is None:
            raise ContainerMissing(f"VM {vm.name} has no container on {self.uri}")
        return container

    def open_console(self, vm: VmSpec) -> ConsoleStream:
        # A shell in a tty of its own (the containers run without one): `podman exec -it`.
        return DockerConsole(self.client, self.uri, API_VERSION, vm.name)

    def _image_exists(self, reference: str) -> bool:
        try:
            self.client.images.get(reference)
            return True
        except ImageNotFound:
            return False

    def health(self) -> tuple[bool, str]:
        try:  # a page waits for this: a short timeout of its own
            version = docker.DockerClient(base_url=self.uri, version=API_VERSION, timeout=5).version()
        except Exception as exc:  # any failure to answer is the finding
            return False, f"the Docker API at {self.uri} does not answer: {exc}"
        names = ", ".join(f"{c['Name']} {c['Version']}" for c in version.get("Components", [])[:1])
        return True, f"{names or 'Docker'} (API {version.get('ApiVersion')}) at {self.uri}"

    # --- init -----------------------------------------------------------------
    def init(self) -> None:
        with fails_as(ErrorCode.ENGINE_INIT):
            self.client.ping()
            self._ensure_network()
            self.firewall.ensure()

    def _ensure_network(self) -> None:
        """The node's bridge network: its VM network as subnet, the gateway on the host."""
        try:
            network = self.client.networks.get(self.network_name)
        except NotFound:
            network = None
        if network is not None and not self._network_is_current(network.attrs):
            if network.attrs.get("Containers"):
                raise EngineError(
                    f"network {self.network_name} has another subnet or bridge than the node's "
                    f"({self.vm_network} on {self.bridge}) and containers still use it",
                    code=ErrorCode.ENGINE_INIT,
                )
            log.warning("network %s does not match the node; recreating it", self.network_name)
            network.remove()
            network = None
        if network is None:
            ipam = docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=self.vm_network, gateway=self.gateway_ip)]
            )
            self.client.networks.create(
                self.network_name, driver="bridge", ipam=ipam, check_duplicate=True,
                options={"com.docker.network.bridge.name": self.bridge},
                labels={LABEL_NODE: self.node_name},
            )

    def _network_is_current(self, attrs: dict) -> bool:
        configs = (attrs.get("IPAM") or {}).get("Config") or []
        subnets = {(c.get("Subnet"), c.get("Gateway")) for c in configs}
        bridge = (attrs.get("Options") or {}).get("com.docker.network.bridge.name") or self._podman_bridge()
        return subnets == {(self.vm_network, self.gateway_ip)} and bridge in (None, self.bridge)

    def _podman_bridge(self) -> str | None:
        """podman's Docker API reports no bridge option back; its own API names the bridge
        (None from an engine without that API: Docker reports the option itself)."""
        api = self.client.api
        response = api._get(f"{api.base_url}/v4.0.0/libpod/networks/{self.network_name}/json")
        if response.status_code != 200:
            return None
        return response.json().get("network_interface")

    # --- storage: the container's writable layer ---------------------------------
    def _storage_info(self) -> dict:
        """The engine's storage driver, its backing filesystem and its root directory."""
        if self._storage is None:
            info = self.client.info()
            status = dict(tuple(pair) for pair in info.get("DriverStatus") or [] if len(pair) == 2)
            self._storage = {"driver": info.get("Driver") or "", "root": info.get("DockerRootDir") or "",
                             "backing": status.get("Backing Filesystem", "")}
        return self._storage

    def disk_space(self) -> DiskSpace | None:
        """The filesystem of the engine's storage root (layers, committed snapshots): read
        here when the engine listens on this host's socket; else podman's own report of
        it (its size, and that size less what is used), or None from Docker itself."""
        root = self._storage_info()["root"]
        if self.uri.startswith("unix://") and root:
            with contextlib.suppress(OSError):
                return DiskSpace.of_path(root)
        api = self.client.api
        response = api._get(f"{api.base_url}/v4.0.0/libpod/info")
        if response.status_code != 200:
            return None
        store = response.json().get("store") or {}
        total, used = store.get("graphRootAllocated"), store.get("graphRootUsed")
        if not total or used is None:
            return None
        return DiskSpace(total_bytes=int(total), free_bytes=max(0, int(total) - int(used)))

    def writable_sizes(self, prefix: str) -> dict[str, int]:
        """Each container's writable layer (SizeRw), for all the node's containers named
        with `prefix` in one list call. The engine walks each layer to size it: about 9 ms
        per container of 1,000 files here (podman 4.3, overlay on ext4)."""
        rows = self.client.api.containers(all=True, size=True, filters={"name": prefix})
        sizes = {}
        for row in rows:
            for name in row.get("Names") or []:
                name = name.lstrip("/")
                if name.startswith(prefix):
                    sizes[name] = int(row.get("SizeRw") or 0)
        return sizes

    def _layer_limit(self, vm: VmSpec) -> dict:
        """The create's storage options: the writable layer limited to disk_mb where the
        storage driver can (see layer_limit_supported), else none."""
        if self.limits_layers is None:
            self.limits_layers = layer_limit_supported(**{
                k: v for k, v in self._storage_info().items() if k in ("driver", "backing")})
        return {"storage_opt": {"size": f"{vm.disk_mb}M"}} if self.limits_layers else {}

    @staticmethod
    def layer_reference(vm: VmSpec) -> str:
        return f"container:{vm.name}"

    def create_image(self, vm: VmSpec) -> str:
        """The writable layer comes with the container (define_vm); here the template's
        image must be on the node, since nothing is ever pulled."""
        if not self._image_exists(vm.template.path):
            raise EngineError(
                f"template image {vm.template.path!r} is not on node {self.node_name or self.uri} "
                "(no registry is reachable: build or load it there)",
                code=ErrorCode.STORAGE_CREATE_IMAGE,
            )
        return self.layer_reference(vm)

    def destroy_image(self, vm: VmSpec) -> None:
        """The layer goes with the container, its tags with the definition (undefine_vm)."""

    def create_seed(self, vm: VmSpec) -> None:
        raise EngineError("containers boot no cloud-init seed", code=ErrorCode.UNSUPPORTED)

    def destroy_seed(self, vm: VmSpec) -> None:
        pass  # never made

    def storage_create_snapshot(self, vm: VmSpec, name: str) -> str:
        reference = snapshot_reference(vm, name)
        if self._image_exists(reference):  # a retried task already committed it
            return reference
        container = self._require_container(vm)
        container.commit(repository=snapshot_repository(vm), tag=f"snap-{name}",
                         conf={"Labels": {LABEL_VM: str(vm.id)}})
        return reference

    def storage_snapshot_live(self, vm: VmSpec, name: str) -> str | None:
        return None  # the base flow stops the container, commits, starts it again

    def thaw_guest(self, vm: VmSpec) -> None:
        pass  # nothing is frozen

    def storage_destroy_snapshot(self, vm: VmSpec, snapshot: SnapshotSpec) -> None:
        reference = snapshot.path or snapshot_reference(vm, snapshot.name)
        try:
            image = self.client.images.get(reference)
        except ImageNotFound:
            return
        # By image id: podman's `ancestor` filter knows only full names (docker.io/…).
        users = [c.name for c in self.client.containers.list(all=True)
                 if c.attrs.get("Image") == image.id and c.name != vm.name]
        if users and len(image.tags) <= 1:
            raise EngineError(
                f"snapshot image {reference} is still used by container(s) {', '.join(sorted(users))}: "
                "remove them first",
                code=ErrorCode.SNAPSHOT_DESTROY,
            )
        self._untag(reference)

    def storage_apply_snapshot(self, vm: VmSpec, snapshot: SnapshotSpec) -> None:
        reference = snapshot.path or snapshot_reference(vm, snapshot.name)
        image = self.client.images.get(reference)
        self._recreate_from(vm, image)

    def _recreate_from(self, vm: VmSpec, image) -> None:
        """The VM's container made anew from `image` (its `base` from now on)."""
        image.tag(snapshot_repository(vm), "base")
        self._remove_container(vm.name)
        self._create_container(vm, base_reference(vm))

    def _untag(self, reference: str) -> None:
        try:
            # Without force: a tag that is the image's last name and still in use by a
            # container is refused rather than the container removed with it.
            self.client.images.remove(reference, noprune=False)
        except ImageNotFound:
            pass
        except APIError as exc:
            if exc.status_code == 409:
                log.info("image %s is still used; its tag stays: %s", reference, exc.explanation)
            else:
                raise

    def import_rootfs(self, tarball: str, reference: str, command: str) -> int:
        """A root filesystem tarball as a local image (nothing is pulled); its size in
        bytes. An image of that reference is kept: the tag is a content fingerprint."""
        if not self._image_exists(reference):
            answer = self.client.api.import_image_from_file(tarball, changes=[f'CMD ["{command}"]'])
            # podman's import takes no tag (it says `latest` or nothing): tag the id it answers.
            image_id = json.loads(answer.strip().splitlines()[-1])["id"]
            repository, _, tag = reference.rpartition(":")
            self.client.images.get(image_id).tag(repository, tag)
        return self.image_size(reference)

    def image_size(self, reference: str) -> int:
        """The image's size in bytes; EngineError when the node has no such image."""
        try:
            return int(self.client.images.get(reference).attrs.get("Size") or 0)
        except ImageNotFound:
            raise EngineError(f"node has no image {reference!r} (nothing is pulled: build or load it there)",
                              code=ErrorCode.NOT_FOUND) from None

    # --- lifecycle ---------------------------------------------------------------
    def _create_container(self, vm: VmSpec, image: str):
        endpoint = self.client.api.create_endpoint_config(ipv4_address=vm.ip)
        # The SDK offers mac_address only from API 1.44; podman reads it here.
        endpoint["MacAddress"] = vm.mac
        options = dict(
            name=vm.name, hostname=vm.name, detach=True,
            labels={LABEL_VM: str(vm.id), LABEL_ENV: str(vm.env_id), LABEL_NODE: self.node_name},
            cpu_period=CPU_PERIOD, cpu_quota=CPU_PERIOD * vm.cpu_num, mem_limit=f"{vm.mem_mb}m",
            stop_signal="SIGTERM", network=self.network_name,
            networking_config={self.network_name: endpoint},
        )
        limit = self._layer_limit(vm)
        try:
            container = self.client.containers.create(image, **options, **limit)
        except APIError as exc:
            if not limit or not refuses_layer_limit(exc):
                raise
            # xfs without project quotas, say: the driver cannot limit a layer after all.
            log.warning("%s: the storage driver refuses a writable-layer limit (%s); the disk "
                        "watchdog stands in for it", vm.name, exc.explanation)
            self.limits_layers = False
            container = self.client.containers.create(image, **options)
        if vm.uuid:  # rand_uuid: its own machine-id, as a VM has its own SMBIOS UUID
            write_file(container, "/etc", "machine-id", vm.uuid.replace("-", "") + "\n")
        return container

    def define_vm(self, vm: VmSpec) -> None:
        if self._container(vm.name) is not None:
            return  # a retried task already created it
        image = base_reference(vm) if self._image_exists(base_reference(vm)) else vm.template.path
        self._create_container(vm, image)

    def undefine_vm(self, vm: VmSpec) -> None:
        """The container, and every image tag of the VM (its snapshots and base) but the
        one keep_image asks for: the VM is gone, so are they."""
        container = self._container(vm.name)
        if container is not None and vm.keep_image:
            container.commit(repository=snapshot_repository(vm), tag="kept",
                             conf={"Labels": {LABEL_VM: str(vm.id)}})
            log.info("%s: last state kept as image %s", vm.name, kept_reference(vm))
        self._remove_container(vm.name)
        for tag in self._tags_of(vm):
            if not tag.endswith(":kept"):
                self._untag(tag)

    def _tags_of(self, vm: VmSpec) -> list[str]:
        """The VM's image tags, as the engine names them (podman prefixes docker.io/)."""
        repository = snapshot_repository(vm)
        return [tag for image in self.client.images.list() for tag in image.tags
                if tag.rpartition(":")[0].removeprefix("docker.io/").removeprefix("localhost/") == repository]

    def _remove_container(self, name: str) -> None:
        container = self._container(name)
        if container is None:
            return
        with contextlib.suppress(NotFound):
            container.remove(force=True)

    def update_vm(self, vm: VmSpec) -> None:
        """New limits: podman's Docker API has no container update, so the container is
        committed and made again from that image (its writable layer carried over)."""
        container = self._require_container(vm)
        host = container.attrs.get("HostConfig") or {}
        if host.get("Memory") == vm.mem_mb * 1024 * 1024 and host.get("CpuQuota") == CPU_PERIOD * vm.cpu_num:
            return
        image = container.commit(repository=snapshot_repository(vm), tag="base",
                                 conf={"Labels": {LABEL_VM: str(vm.id)}})
        self._recreate_from(vm, image)

    def start_vm(self, vm: VmSpec) -> None:
        container = self._require_container(vm)
        if container.status == "running":
            return
        # Network first, process second: the port gets its name while nothing of the
        # image runs yet (podman's init), so the firewall binds every frame it sends.
        initialised = self._init_container(vm.name)
        if initialised:
            self._name_port(vm, container)
        container.start()
        if not initialised:  # an engine without init: named just after the start
            log.warning("%s: the engine has no container init; its port is named after the start", vm.name)
            self._name_port(vm, container)

    def _init_container(self, name: str) -> bool:
        """podman's `init`: namespaces and network set up, the runtime waiting to start the
        image's process. False where the API has no such call (Docker itself)."""
        api = self.client.api
        response = api._post(f"{api.base_url}/v4.0.0/libpod/containers/{name}/init")
        if response.status_code == 404 and "no such container" not in response.text.lower():
            return False
        api._raise_for_status(response)
        return True

    def _name_port(self, vm: VmSpec, container) -> None:
        container.reload()
        netns = (container.attrs.get("NetworkSettings") or {}).get("SandboxKey")
        try:
            if not netns:
                raise hostport.HostPortError("it has no network namespace")
            was = hostport.name_container_port(netns, vm.tap, self.bridge)
        except hostport.HostPortError as exc:
            with contextlib.suppress(APIError):  # its network torn down with it
                container.stop(timeout=0)
            raise EngineError(f"{vm.name}: could not name its port {vm.tap}: {exc}",
                              code=ErrorCode.START_VM) from exc
        log.info("%s: its port %s is now %s", vm.name, was, vm.tap)
        # podman makes the bridge afresh when its first container starts: let
        # 127.0.0.1:PORT on the node reach the container, as on QEMU nodes.
        with contextlib.suppress(OSError):
            allow_loopback_forwarding(self.bridge)

    def stop_vm(self, vm: VmSpec, *, force: bool = False) -> str:
        container = self._container(vm.name)
        if container is None or container.status != "running":
            return "already stopped"
        if force:
            container.kill()
            container.wait(timeout=self.stop_timeout + 30)
            return "killed"
        started = time.monotonic()
        container.stop(timeout=self.stop_timeout)
        took = time.monotonic() - started
        container.reload()
        code = container.attrs.get("State", {}).get("ExitCode")
        if code == 137 or took >= self.stop_timeout:
            return f"killed after {self.stop_timeout} s (SIGTERM ignored)"
        return f"ended on SIGTERM in {took:.1f} s (exit code {code})"

    def power_state(self, vm: VmSpec) -> PowerState:
        container = self._container(vm.name)
        if container is None:
            return PowerState.MISSING
        return PowerState.RUNNING if container.status in ("running", "paused") else PowerState.STOPPED

    def guest_addresses(self, vm: VmSpec) -> list[tuple[str, str]] | None:
        container = self._container(vm.name)
        if container is None or container.status != "running":
            return None
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        found = networks.get(self.network_name) or {}
        if not found.get("IPAddress"):
            return None
        return [("eth0", f"{found['IPAddress']}/{found.get('IPPrefixLen', 0)}")]

    def console_log(self, vm_name: str, limit: int = 16_384) -> str | None:
        """The container's own log (its PID 1's output) is its console."""
        try:
            raw = self.client.containers.get(vm_name).logs(tail=500)
        except (NotFound, APIError, OSError):
            return None
        text = raw.decode("utf-8", errors="replace")
        if len(text) > limit:
            text = text[-limit:].split("\n", 1)[-1]
        return text

    # --- into the running container: exec and archive APIs (guest_exec, guest_files) ------
    @property
    def _engine_is_local(self) -> bool:
        """Its exec PIDs are this host's (a timed-out command is killed from here)."""
        return self.uri.startswith("unix://")

    def exec(self, vm: VmSpec, request: ExecRequest, on_output: OutputSink | None = None) -> ExecResult:
        return self._exec(vm.name, request, on_output)

    def _runner(self, vm: VmSpec):
        """Runs a command in the VM's container for the file calls (a rename, a listing)."""
        return lambda request: self._exec(vm.name, request)

    def _exec(self, name: str, request: ExecRequest, on_output: OutputSink | None = None) -> ExecResult:
        target = self._exec_target(name)
        if target is not None:
            return runc_exec.run_runc_exec(target, request, self._guest_reader(name, target), on_output)
        return guest_exec.run_exec(self.client.api, name, request, on_output, local=self._engine_is_local)

    @property
    def exec_path(self) -> str:
        """How commands reach containers: "runc", "api", or "auto" before auto's first."""
        if self._runc_wins is None:
            return "auto"
        return "runc" if self._runc_wins else "api"

    def _exec_target(self, name: str) -> runc_exec.RuncTarget | None:
        """The container as `runc exec` runs it, or None for podman's exec API: TT_DOCKER_EXEC
        "api" always, "runc" always (an error where it cannot), "auto" runc where it applies
        (podman on this host, as root, runc its runtime, its state under /run/runc). The first
        time auto finds runc applies, one `true` is timed each way and the choice logged."""
        if self.exec_mode == "api" or self._runc_wins is False:
            return None
        try:
            if not self._engine_is_local:
                raise runc_exec.NotApplicable(f"the engine at {self.uri} is not on this host")
            target = runc_exec.runc_target(self._libpod_inspect(name), self._oci_runtime_path())
        except runc_exec.NotApplicable as exc:
            if self.exec_mode == "runc":
                raise EngineError(f"TT_DOCKER_EXEC=runc, but runc cannot run commands in {name}: {exc}",
                                  code=ErrorCode.GUEST_EXEC) from None
            # Said once at info (a node where runc never applies would say it at each command)
            level = logging.DEBUG if self._fallback_said else logging.INFO
            self._fallback_said = True
            log.log(level, "exec through podman's API on node %s: runc cannot run commands in %s (%s)",
                    self.node_name, name, exc)
            return None
        if self._runc_wins is None:
            with self._exec_lock:
                if self._runc_wins is None:
                    self._runc_wins = self._calibrate(name, target)
        return target if self._runc_wins else None

    def _calibrate(self, name: str, target: runc_exec.RuncTarget) -> bool:
        """One `true` each way in the container: whether runc gives what the API gives; the
        log says which path auto takes, and by how much runc is faster."""
        probe = ExecRequest(argv=("true",), timeout=30.0)
        try:
            started = time.monotonic()
            direct = runc_exec.run_runc_exec(target, probe, self._guest_reader(name, target))
            direct_ms = (time.monotonic() - started) * 1000
            started = time.monotonic()
            through_api = guest_exec.run_exec(self.client.api, name, probe, local=True)
            api_ms = (time.monotonic() - started) * 1000
        except EngineError as exc:
            log.warning("exec through podman's API on node %s: runc exec failed its first run (%s)",
                        self.node_name, exc)
            return False
        if direct.exit_code != through_api.exit_code:
            log.warning("exec through podman's API on node %s: `true` exited %s through runc but %s "
                        "through the API", self.node_name, direct.exit_code, through_api.exit_code)
            return False
        log.info("exec through runc directly on node %s: %.0f ms faster than podman's API "
                 "(one `true`: runc %.0f ms, API %.0f ms)", self.node_name, api_ms - direct_ms,
                 direct_ms, api_ms)
        return True

    def _libpod_inspect(self, name: str) -> dict:
        """podman's own inspect of the container (its OCI runtime and config path, which the
        Docker API does not tell). ContainerNotRunning when there is no such container."""
        api = self.client.api
        response = api._get(f"{api.base_url}/v4.0.0/libpod/containers/{name}/json")
        if response.status_code == 404:
            if "no such container" in response.text.lower():
                raise guest_exec.ContainerNotRunning(f"container {name} does not exist")
            raise runc_exec.NotApplicable("the engine has no libpod API (not podman)")
        api._raise_for_status(response)
        return response.json()

    def _oci_runtime_path(self) -> str:
        """The OCI runtime binary podman runs (its info), asked once."""
        if self._runtime_path is None:
            api = self.client.api
            response = api._get(f"{api.base_url}/v4.0.0/libpod/info")
            if response.status_code != 200:
                raise runc_exec.NotApplicable("the engine has no libpod API (not podman)")
            runtime = (response.json().get("host") or {}).get("ociRuntime") or {}
            self._runtime_path = runtime.get("path") or ""
        return self._runtime_path

    def _guest_reader(self, name: str, target: runc_exec.RuncTarget) -> runc_exec.ReadGuestFile:
        """Reads a small file of the container (/etc/passwd, /etc/group) from the host, resolved
        inside the container (runc_exec.read_in_container); through the archive API where the
        kernel cannot (no openat2). None when the container has no such file."""
        def read(path: str) -> bytes | None:
            try:
                return runc_exec.read_in_container(target.init_pid, path)
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EPERM):
                    raise EngineError(f"{path} of the container cannot be read: {exc.strerror}",
                                      code=ErrorCode.GUEST_EXEC) from None
            try:
                with guest_files.get_file(self.client.api, name, path) as file:
                    data = b"".join(file)
            except GuestPathMissing:
                return None
            if len(data) > runc_exec.ACCOUNTS_LIMIT:
                raise EngineError(f"{path} of the container is larger than {runc_exec.ACCOUNTS_LIMIT} bytes",
                                  code=ErrorCode.GUEST_EXEC)
            return data
        return read

    def file_put(self, vm: VmSpec, path: str, chunks: Iterator[bytes], *, mode: int | None = None,
                 owner: str = "") -> int:
        guest_exec.container_running(self.client.api, vm.name)
        return guest_files.put_file(self.client.api, vm.name, path, chunks, self._runner(vm),
                                    mode=mode, owner=owner)

    def file_get(self, vm: VmSpec, path: str) -> GuestFile:
        guest_exec.container_running(self.client.api, vm.name)
        return guest_files.get_file(self.client.api, vm.name, path)

    def file_list(self, vm: VmSpec, path: str) -> list[FileEntry]:
        guest_exec.container_running(self.client.api, vm.name)
        return guest_files.list_dir(self.client.api, vm.name, path, self._runner(vm))

    # --- what the node holds --------------------------------------------------------
    def inventory(self, prefix: str) -> Inventory:
        names = frozenset(
            c.name for c in self.client.containers.list(all=True, filters={"name": prefix})
            if c.name.startswith(prefix)
        )
        # Layers go with their containers, and addresses are set per container: no
        # image or reservation can outlive its VM here.
        return Inventory(instances=names, images={}, reservations=None)

    def remove_instance(self, name: str) -> None:
        self._remove_container(name)

    def remove_image(self, name: str) -> None:
        pass  # see inventory: there are none

    def set_reservation(self, mac: str, ip: str, name: str, *, present: bool) -> None:
        pass  # the container is created with its address; the network keeps no list


def layer_limit_supported(driver: str, backing: str) -> bool:
    """Whether the storage driver can limit a container's writable layer (the create's
    `StorageOpt size`): btrfs and zfs can, overlay only over xfs (mounted with project
    quotas, which no API tells: a refusal at create turns it off). Not overlay over
    ext4, as here, nor vfs."""
    driver, backing = driver.lower(), backing.lower()
    return driver in ("btrfs", "zfs") or (driver.startswith("overlay") and backing == "xfs")


def refuses_layer_limit(exc: APIError) -> bool:
    text = f"{exc.explanation or ''} {exc}".lower()
    return "storage-opt" in text or "storage option" in text or "pquota" in text or "quota" in text


def write_file(container, directory: str, name: str, content: str) -> None:
    """One file into the container, through the archive API. Writing the same file again
    is harmless, so a transient failure is retried: podman 4.3 once answered a fresh
    machine's first write with `500 ... passing bulk input to subprocess: write |1: broken
    pipe`."""
    data = _file_tar(name, content)
    retry(lambda: container.put_archive(directory, data), transient=transient_api_error,
          what=f"writing {directory}/{name} into {getattr(container, 'name', 'a container')}")


# What a Docker API error says when the engine's side of a request broke, not the request.
_TRANSIENT_WORDS = ("broken pipe", "connection reset")


def transient_api_error(exc: BaseException) -> bool:
    """A server-side (5xx) API error that a broken pipe or reset connection caused, or a
    connection to the engine that broke: the same request may well succeed again."""
    if isinstance(exc, APIError):
        text = f"{exc.explanation or ''} {exc}".lower()
        return exc.is_server_error() and any(word in text for word in _TRANSIENT_WORDS)
    return isinstance(exc, requests.ConnectionError)


def _file_tar(name: str, content: str) -> bytes:
    data = content.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o444
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
