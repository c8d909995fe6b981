"""Build the small busybox template from Debian packages only, and import it into a node.

Kernel from `linux-image-cloud-amd64` (virtio is modular there, so an initramfs
loads it), userland from `busybox-static`. The guest takes its address from
DHCP (the node's per-MAC host entries), serves a page naming itself on port
80, powers off on the ACPI button, and prints `TT-READY` on its serial
console. Built with `test_shell` (the default), it also offers an
UNAUTHENTICATED root shell on TCP 23, which the tests drive the guest through, and on its
serial console (the portal's live console); operators who do not want them build with
TT_TEMPLATE_TEST_SHELL=0: no telnet, and a login prompt on the console with root locked.

Built artefacts are cached by kernel version and builder version, so later
runs on the same machine skip the build.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BUILDER_VERSION = 3
GUEST_FILES = Path(__file__).with_name("guest")
DEFAULT_CACHE = Path(os.environ.get("TT_CACHE_DIR", "/var/cache/ttportal"))
ROOTFS_MB = 64
# Load order matters: each module needs the ones before it.
MODULES = [
    "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
    "failover", "net_failover", "virtio_net", "virtio_blk", "button", "evdev",
]
# A VM booted to be saved (a warm spare) also gets init_on_free=1 (engines/libvirt/xml.py:
# ZERO_FREED_MEMORY), a cold boot does not: it costs every boot of this guest some 0.2 s of CPU.
CMDLINE = "console=ttyS0 root=/dev/vda rw panic=-1 quiet"


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class BuiltTemplate:
    kernel: Path
    initrd: Path
    rootfs: Path
    cmdline: str
    kernel_version: str
    size_mb: int = ROOTFS_MB  # the root disk's virtual size


def run_tool(*cmd: str, cwd: Path | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def _kernel_package() -> str:
    """The versioned kernel package the `linux-image-cloud-amd64` meta-package points at."""
    for attempt in range(2):
        try:
            out = run_tool("apt-cache", "depends", "linux-image-cloud-amd64")
        except BuildError:
            out = ""
        match = re.search(r"Depends:\s+(linux-image-[0-9][^\s]*-cloud-amd64)", out)
        if match:
            return match.group(1)
        if attempt == 0:  # a fresh machine has no package lists yet
            run_tool("apt-get", "update", "-qq")
    raise BuildError("apt knows no linux-image-cloud-amd64 (is a Debian mirror reachable?)")


def download_deb(package: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    existing = sorted(dest.glob(f"{package}_*.deb"))
    if existing:
        return existing[-1]
    run_tool("apt-get", "download", package, cwd=dest)
    found = sorted(dest.glob(f"{package}_*.deb"))
    if not found:
        raise BuildError(f"apt-get download {package} produced no .deb")
    return found[-1]


def _fingerprint(kernel_deb: Path, busybox_deb: Path, test_shell: bool) -> str:
    # Without the test shell the console asks for a login (since issue 25): a name of its own,
    # so a template cached with the old open console is not reused.
    shell = ":test-shell" if test_shell else ":login-console"
    h = hashlib.sha256(f"v{BUILDER_VERSION}:{kernel_deb.name}:{busybox_deb.name}{shell}".encode())
    for f in sorted(GUEST_FILES.iterdir()):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build(cache_dir: Path = DEFAULT_CACHE, *, test_shell: bool = True) -> BuiltTemplate:
    """Build (or reuse from the cache) the kernel, initramfs and qcow2 root disk."""
    debs = cache_dir / "debs"
    kernel_pkg = _kernel_package()
    kernel_deb = download_deb(kernel_pkg, debs)
    busybox_deb = download_deb("busybox-static", debs)
    out = cache_dir / "templates" / f"busybox-{_fingerprint(kernel_deb, busybox_deb, test_shell)}"
    kernel_version = kernel_pkg.removeprefix("linux-image-")
    result = BuiltTemplate(out / "vmlinuz", out / "initrd.img", out / "rootfs.qcow2", CMDLINE, kernel_version)
    if all(p.exists() for p in (result.kernel, result.initrd, result.rootfs)):
        return result
    with tempfile.TemporaryDirectory(prefix="tt-template-") as tmp:
        work = Path(tmp)
        run_tool("dpkg-deb", "-x", str(kernel_deb), str(work / "kernel"))
        run_tool("dpkg-deb", "-x", str(busybox_deb), str(work / "busybox"))
        busybox = work / "busybox" / "bin" / "busybox"
        stage = work / "out"
        stage.mkdir()
        shutil.copy(work / "kernel" / "boot" / f"vmlinuz-{kernel_version}", stage / "vmlinuz")
        _build_initramfs(work, busybox, kernel_version, stage / "initrd.img")
        _build_rootfs(work, busybox, stage / "rootfs.qcow2", test_shell=test_shell)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(stage), out)
    return result


def _build_initramfs(work: Path, busybox: Path, kernel_version: str, dest: Path) -> None:
    root = work / "initramfs"
    (root / "bin").mkdir(parents=True)
    (root / "modules").mkdir()
    shutil.copy(busybox, root / "bin" / "busybox")
    modules_dir = work / "kernel" / "lib" / "modules" / kernel_version / "kernel"
    for name in MODULES:
        found = list(modules_dir.rglob(f"{name}.ko")) + list(modules_dir.rglob(f"{name}.ko.xz"))
        if not found:
            raise BuildError(f"kernel module {name} not found in {kernel_version}")
        src = found[0]
        target = root / "modules" / f"{name}.ko"
        if src.suffix == ".xz":  # newer kernels compress modules; busybox insmod wants them plain
            plain = subprocess.run(["xz", "-dc", str(src)], capture_output=True, check=True).stdout
            target.write_bytes(plain)
        else:
            shutil.copy(src, target)
    (root / "modules.order").write_text("\n".join(MODULES) + "\n")
    shutil.copy(GUEST_FILES / "init", root / "init")
    os.chmod(root / "init", 0o755)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    listing = ("\n".join(files) + "\n").encode()
    proc = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=listing, capture_output=True
    )
    if proc.returncode != 0:
        raise BuildError(f"cpio failed: {proc.stderr.decode().strip()}")
    dest.write_bytes(gzip.compress(proc.stdout, compresslevel=6))


# The serial console's line in guest/inittab (a root shell, no login), and what replaces it
# in a template built without the test shell.
SHELL_GETTY = "/sbin/getty -n -l /bin/sh -L 115200 ttyS0 vt100"
LOGIN_GETTY = "/sbin/getty -L 115200 ttyS0 vt100"


def _build_rootfs(work: Path, busybox: Path, dest: Path, *, test_shell: bool) -> None:
    root = work / "rootfs"
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc/init.d", "etc/acpi/PWRF", "proc", "sys", "dev",
              "tmp", "run", "root", "www", "var/log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    applets = run_tool(str(busybox), "--list-full").split()
    for applet in applets:
        link = root / applet
        if link.name == "busybox" or link.exists():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    for src, target, mode in (
        ("rcS", "etc/init.d/rcS", 0o755),
        ("inittab", "etc/inittab", 0o644),
        ("udhcpc.script", "etc/udhcpc.script", 0o755),
        ("power-button", "etc/acpi/PWRF/00000080", 0o755),
    ):
        shutil.copy(GUEST_FILES / src, root / target)
        os.chmod(root / target, mode)
    if test_shell:
        # guest/inittab as it is: a root shell on the serial console, no login (what the
        # portal's console opens), like the telnet shell below.
        (root / "etc" / "passwd").write_text("root::0:0:root:/root:/bin/sh\n")
    else:
        # A login prompt on the serial console, and root's password locked: nobody gets in
        # by it until a user sets a password (this guest has no cloud-init to do it).
        inittab = root / "etc" / "inittab"
        inittab.write_text(inittab.read_text().replace(SHELL_GETTY, LOGIN_GETTY))
        (root / "etc" / "passwd").write_text("root:!:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "hostname").write_text("tt-guest\n")
    if test_shell:
        (root / "etc" / "tt-test-shell").write_text("an unauthenticated root shell on TCP 23, for tests\n")
    raw = work / "rootfs.ext4"
    run_tool("mkfs.ext4", "-q", "-F", "-L", "ttroot", "-d", str(root), str(raw), f"{ROOTFS_MB}M")
    run_tool("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(dest))
