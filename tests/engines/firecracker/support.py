"""Plain helpers of the Firecracker driver's tests (fixtures are in conftest.py): the
recording host network, where the fake binaries and their call log live, a tiny template,
VMs, and what a node still holds.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from engines.firecracker.engine import FirecrackerEngine
from engines.firecracker.hostnet import HostNetwork
from engines.network.firewall import MemoryFirewall
from engines.node_options import NodeOptions
from engines.specs import PortSpec, TemplateSpec, VmSpec

HERE = Path(__file__).resolve().parent
FAKE_FIRECRACKER = HERE / "fake_firecracker.py"
FAKE_JAILER = HERE / "fake_jailer.py"
BRIDGE = "ttfcunit0"
VM_NETWORK = "10.200.0.0/16"
TEMPLATE_FILE = "tiny-root.ext4"
KERNEL_FILE = "vmlinux-tiny"
TEMPLATE_BYTES = b"a tiny ext4 root, as far as the fake can tell\n"


class RecordingHostNetwork(HostNetwork):
    """The host network as a set of link names and the commands that changed it. The links
    are also written to a file the fake firecracker reads: it refuses a tap that is not there."""

    def __init__(self, links_file: Path):
        self.links: set[str] = set()
        self.commands: list[tuple[str, ...]] = []
        self.links_file = links_file
        self._save()

    def ensure_bridge(self, bridge: str, address: str) -> None:
        self.commands.append(("ensure_bridge", bridge, address))
        self.links.add(bridge)
        self._save()

    def add_tap(self, tap: str, bridge: str) -> None:
        assert bridge in self.links, f"tap {tap} put on bridge {bridge}, which does not exist"
        self.commands.append(("add_tap", tap, bridge))
        self.links.add(tap)
        self._save()

    def remove_tap(self, tap: str) -> None:
        if tap in self.links:
            self.commands.append(("remove_tap", tap))
            self.links.discard(tap)
            self._save()

    def has_link(self, name: str) -> bool:
        return name in self.links

    def _save(self) -> None:
        self.links_file.write_text(json.dumps(sorted(self.links)))


@dataclass
class FakeHost:
    """Where the fake binaries and their records live for one test."""

    root: Path
    bin_dir: Path
    pool: Path
    log: Path
    links_file: Path
    spec: str

    @property
    def firecracker(self) -> str:
        return str(self.bin_dir / "firecracker")

    @property
    def jailer(self) -> str:
        return str(self.bin_dir / "jailer")

    def entries(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def calls(self, pid: int | None = None) -> list[dict]:
        """The API calls the fake answered (of one process, given its pid), in order."""
        return [e for e in self.entries() if "method" in e and (pid is None or e["pid"] == pid)]

    def pids(self) -> list[int]:
        """Every fake process started, in order."""
        return [e["pid"] for e in self.entries() if e.get("event") == "started"]

    def started(self, pid: int) -> dict:
        return next(e for e in self.entries() if e.get("event") == "started" and e["pid"] == pid)


def write_wrapper(path: Path, script: Path) -> None:
    # The venv's interpreter by absolute path: the jailer clears the environment (PATH too).
    path.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{script}' \"$@\"\n")
    path.chmod(0o755)


def fake_is_running(pid: int) -> bool:
    """A fake firecracker runs at `pid` (a zombie does not run)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and b"fake_firecracker" in cmdline


def make_engine(host: FakeHost, *, jailer: bool = False, **options) -> FirecrackerEngine:
    """The driver on the fake's node: fake binaries, recorded host network, in-memory firewall."""
    settings = dict(
        pool_path=str(host.pool), bridge=BRIDGE, vm_network=VM_NETWORK, gateway_ip="10.200.0.1",
        console_dir="", stop_timeout=5, binary=host.firecracker,
        jailer=host.jailer if jailer else "", firewall=MemoryFirewall(),
        hostnet=RecordingHostNetwork(host.links_file),
    )
    engine = FirecrackerEngine(uri="firecracker:///", options=NodeOptions(**{**settings, **options}))
    engine.init()
    return engine


def make_vm(template: TemplateSpec, n: int = 1, **changes) -> VmSpec:
    vm = VmSpec(
        id=n, name=f"tt-fcunit-{n}", template=template, cpu_num=2, mem_mb=128, disk_mb=8,
        mac=f"52:54:00:00:02:{n:02x}", ip=f"10.200.2.{n}", ports=(PortSpec("tcp", 22, 20000 + n),), env_id=7,
    )
    return vm.replace(**changes)


def leftovers(host: FakeHost) -> list[str]:
    """What the node still holds besides the template and the node's own directories."""
    found = [str(p.relative_to(host.pool)) for p in host.pool.rglob("*")
             if p.name not in (TEMPLATE_FILE, KERNEL_FILE, "vms", "jail")]
    return sorted(found)


def shape(calls: list[dict]) -> list[str]:
    """"PUT /drives/rootfs"-style lines, InstanceActionInfo and Vm bodies spelled out."""
    out = []
    for call in calls:
        line = f"{call['method']} {call['path']}"
        body = call["body"] or {}
        if "action_type" in body or "state" in body:
            line += f" {body.get('action_type') or body.get('state')}"
        out.append(line)
    return out
