"""How a VM's firecracker process is launched, and how it sees the files it is given.

Without the jailer, firecracker runs as is and sees host paths. With it, the
jailer builds a chroot at <chroot base>/<binary's file name>/<vm name>/root,
execs firecracker inside (the same pid, `--id <vm name>` passed on) and
firecracker sees only what is placed there: the driver hard-links the runtime
image into the chroot (the very same file: the guest's writes land in it), links
or copies kernel, initrd and seed, and names them by their path inside the jail.
Snapshot files are written inside the jail and moved out afterwards.

The jailer mknods /dev/kvm and /dev/net/tun in the chroot and fails when they
exist, so every jailed run starts from a fresh chroot (and the chroot goes when
the process ends).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from engines.firecracker import files

API_SOCKET_NAME = "api.sock"
# sun_path holds 108 bytes with its terminating NUL.
MAX_SOCKET_PATH = 107
_JAILER_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class Placement:
    """How the process sees host files: as they are (`root` None) or inside a jail's root."""

    root: Path | None = None

    def expose(self, host_path: Path, name: str, *, writable: bool) -> str:
        """The path the process opens for `host_path`. In a jail the file is placed at
        /<name>: hard-linked when the guest writes it, else linked or copied."""
        if self.root is None:
            return str(host_path)
        inside = self.root / name
        if writable:
            files.hard_link(host_path, inside)
        else:
            files.link_or_copy(host_path, inside)
        return "/" + name

    def output(self, name: str, dest: Path) -> str:
        """Where the process should write a file that must end up at `dest`."""
        if self.root is None:
            return str(dest)
        (self.root / "out").mkdir(exist_ok=True)
        return f"/out/{name}"

    def collect(self, name: str, dest: Path) -> None:
        """Move a file the process wrote (see `output`) to `dest`."""
        if self.root is not None:
            os.replace(self.root / "out" / name, dest)


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    api_socket: Path
    placement: Placement
    cwd: Path
    jail_instance: Path | None = None  # the jailer's <base>/<binary>/<vm name>, rebuilt for each run

    def prepare(self) -> None:
        """What a fresh process needs: no stale socket (firecracker refuses to start over
        one), a fresh and empty chroot."""
        files.remove_file(self.api_socket)
        if self.jail_instance is not None:
            files.remove_tree(self.jail_instance)
            (self.jail_instance / "root").mkdir(parents=True)


def _checked_socket(path: Path) -> Path:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ValueError(
            f"the API socket path {path} is longer than the {MAX_SOCKET_PATH} bytes a unix socket "
            "allows: give the node a shorter pool directory"
        )
    return path


def direct_launch(binary: str, state_dir: Path, vm_name: str) -> Launch:
    socket = _checked_socket(state_dir / API_SOCKET_NAME)
    return Launch(
        argv=[binary, "--id", vm_name, "--api-sock", str(socket)],
        api_socket=socket, placement=Placement(None), cwd=state_dir,
    )


def jailed_launch(jailer: str, binary: str, chroot_base: Path, vm_name: str) -> Launch:
    if not _JAILER_ID.match(vm_name):
        raise ValueError(
            f"the jailer takes ids of letters, digits and hyphens (at most 64): {vm_name!r} is not one"
        )
    # The jailer names the chroot after the binary's canonical path, symlinks resolved.
    exec_file = os.path.realpath(binary)
    instance = chroot_base / os.path.basename(exec_file) / vm_name
    root = instance / "root"
    socket = _checked_socket(root / API_SOCKET_NAME)
    argv = [
        jailer, "--id", vm_name, "--exec-file", exec_file, "--uid", "0", "--gid", "0",
        "--chroot-base-dir", str(chroot_base), "--", "--api-sock", "/" + API_SOCKET_NAME,
    ]
    return Launch(argv=argv, api_socket=socket, placement=Placement(root), cwd=chroot_base,
                  jail_instance=instance)
