"""Where a Firecracker node keeps each VM's files, all under the node's pool directory.

    <pool>/<vm>.ext4              the runtime image (copy-on-write copy of the template's root)
    <pool>/<vm>-seed.img          its cloud-init seed (CIDATA vfat), when the template reads one
    <pool>/vms/<vm>/vm.json       what the VM is (its VmSpec): Firecracker keeps no definition
    <pool>/vms/<vm>/process.json  the running process (pid, start time, API socket, jail root)
    <pool>/vms/<vm>/api.sock      its API socket (without the jailer)
    <pool>/vms/<vm>/console.log   its serial console, unless the node has a console directory
    <pool>/vms/<vm>/snapshots/<name>/  disk.ext4 [+ vm.state, vm.mem], snapshot.json
    <pool>/vms/<vm>/restore/      a memory snapshot the next start resumes (after an apply)
    <pool>/jail/<firecracker>/<vm>/root/  the jailer's chroot while the VM runs
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIX = ".ext4"
SEED_SUFFIX = "-seed.img"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def safe_name(name: str, what: str) -> str:
    """A name that is one path component of ours (no "/", no "..", no hidden file)."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(f"{what} {name!r} cannot name a file")
    return name


@dataclass(frozen=True)
class Layout:
    pool: Path
    console_dir: str = ""

    @property
    def vms_dir(self) -> Path:
        return self.pool / "vms"

    @property
    def jail_base(self) -> Path:
        return self.pool / "jail"

    def image(self, vm_name: str) -> Path:
        return self.pool / (safe_name(vm_name, "VM name") + IMAGE_SUFFIX)

    def seed(self, vm_name: str) -> Path:
        return self.pool / (safe_name(vm_name, "VM name") + SEED_SUFFIX)

    def state_dir(self, vm_name: str) -> Path:
        return self.vms_dir / safe_name(vm_name, "VM name")

    def definition(self, vm_name: str) -> Path:
        return self.state_dir(vm_name) / "vm.json"

    def process_record(self, vm_name: str) -> Path:
        return self.state_dir(vm_name) / "process.json"

    def console(self, vm_name: str) -> Path:
        if self.console_dir:
            return Path(self.console_dir) / f"{safe_name(vm_name, 'VM name')}.log"
        return self.state_dir(vm_name) / "console.log"

    def restore_dir(self, vm_name: str) -> Path:
        return self.state_dir(vm_name) / "restore"

    def snapshots_dir(self, vm_name: str) -> Path:
        return self.state_dir(vm_name) / "snapshots"

    def snapshot_dir(self, vm_name: str, snapshot_name: str) -> Path:
        return self.snapshots_dir(vm_name) / safe_name(snapshot_name, "snapshot name")

    def jail_instances(self, vm_name: str) -> list[Path]:
        """The jailer's directories of this VM, whatever the binary's name was."""
        if not self.jail_base.is_dir():
            return []
        return sorted(self.jail_base.glob(f"*/{safe_name(vm_name, 'VM name')}"))
