"""Build the Debian 12 template offline, from Debian packages, with mmdebstrap.

What the guest holds: Debian's cloud kernel and its initramfs (booted directly,
no bootloader), systemd, systemd-networkd taking the address the VM's MAC
implies from the node's DHCP (ifupdown failed to raise the NIC here),
openssh-server with no host keys (each VM makes its own on first boot),
cloud-init reading only a NoCloud seed, qemu-guest-agent, and busybox-static
(the shell the agent's exec wrapper runs under). Units a test VM
does not need are masked (the list below, chosen with `systemd-analyze blame`
inside the guest).

The build is cached under a fingerprint of everything that goes in: this
builder's version, the guest files, and the exact version apt would install of
each package. A second build with the same inputs reuses the first one.
Builds aim at the same bytes from the same inputs (a fixed SOURCE_DATE_EPOCH,
build logs removed, file times clamped, a fixed ext4 UUID, hash seed and time):
measured with `bench/debian_guest.py --reproduce`, the kernel and initramfs are
identical across two builds, the root disk image not yet (some file still differs).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from engines.libvirt.template_builder import DEFAULT_CACHE, BuildError, BuiltTemplate, run_tool

BUILDER_VERSION = 3
SUITE = "bookworm"
GUEST_FILES = Path(__file__).with_name("guest-debian")
PACKAGES = (
    "linux-image-cloud-amd64", "systemd-sysv", "systemd-resolved", "dbus", "udev", "iproute2",
    "e2fsprogs",  # resize2fs: cloud-init grows the root filesystem to a VM's larger disk
    "openssh-server", "sudo", "cloud-init", "qemu-guest-agent",
    # /bin/busybox, statically linked: the shell of the guest agent's exec wrapper (it starts
    # ~60 ms sooner than dash under TCG: engines/libvirt/guest_agent.py)
    "busybox-static",
)
# Timers and services a short-lived test VM has no use for, and which cost boot time
# or CPU under TCG.
MASKED = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service", "apt-daily-upgrade.service",
    "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "dpkg-db-backup.timer",
    "getty@tty1.service", "systemd-pstore.service", "cloud-init-hotplugd.socket",
)
ENABLED = ("systemd-networkd.service", "systemd-resolved.service", "ssh.service")
DISK_MB = 2048
CMDLINE = "console=ttyS0 root=/dev/vda rw quiet"
# Fixed, so that two builds of the same package versions produce the same files.
SOURCE_DATE_EPOCH = "1735689600"  # 2025-01-01


def candidate_versions(packages=PACKAGES) -> dict[str, str]:
    """The version apt would install of each package (updating the lists once if need be)."""
    for attempt in range(2):
        out = subprocess.run(["apt-cache", "policy", *packages], capture_output=True, text=True).stdout
        found = dict(re.findall(r"^(\S+):\n\s+Installed: .*\n\s+Candidate: (\S+)", out, re.M))
        if all(found.get(p, "(none)") != "(none)" for p in packages):
            return found
        if attempt == 0:  # a fresh machine has no package lists yet
            run_tool("apt-get", "update", "-qq")
    missing = [p for p in packages if found.get(p, "(none)") == "(none)"]
    raise BuildError(f"apt has no candidate for {', '.join(missing)} (is a Debian mirror reachable?)")


def fingerprint(versions: dict[str, str]) -> str:
    h = hashlib.sha256(f"v{BUILDER_VERSION}:{SUITE}:{CMDLINE}:{DISK_MB}:{MASKED}:{ENABLED}".encode())
    h.update(repr(sorted(versions.items())).encode())
    for f in sorted(p for p in GUEST_FILES.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(GUEST_FILES)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def build(cache_dir: Path = DEFAULT_CACHE) -> BuiltTemplate:
    """Build (or reuse from the cache) the Debian kernel, initramfs and qcow2 root disk."""
    versions = candidate_versions()
    out = cache_dir / "templates" / f"debian12-{fingerprint(versions)}"
    kernel_version = versions["linux-image-cloud-amd64"]
    result = BuiltTemplate(out / "vmlinuz", out / "initrd.img", out / "rootfs.qcow2", CMDLINE,
                           kernel_version, size_mb=DISK_MB)
    if all(p.exists() for p in (result.kernel, result.initrd, result.rootfs)):
        return result
    with tempfile.TemporaryDirectory(prefix="tt-debian-", dir=_scratch(cache_dir)) as tmp:
        work = Path(tmp)
        root = work / "root"
        _mmdebstrap(root)
        stage = work / "out"
        stage.mkdir()
        _copy_boot_files(root, stage)
        _make_root_disk(root, work / "rootfs.ext4", stage / "rootfs.qcow2", out.name)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(stage), out)
    return result


def _make_root_disk(root: Path, raw: Path, dest: Path, name: str) -> None:
    """ext4 of the root tree, then qcow2. Its UUID, hash seed and timestamps come from the
    build's name and SOURCE_DATE_EPOCH rather than chance and the clock (see the module's
    note on how far the bytes are the same from one build to the next)."""
    fixed = str(uuid.uuid5(uuid.NAMESPACE_URL, f"tt-portal:{name}"))
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": SOURCE_DATE_EPOCH}
    result = subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "ttroot", "-U", fixed, "-E", f"hash_seed={fixed}",
         "-d", str(root), str(raw), f"{DISK_MB}M"],
        capture_output=True, text=True, env=env,
    )
    if result.returncode != 0:
        raise BuildError(f"mkfs.ext4 failed: {result.stderr.strip()}")
    run_tool("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(dest))


def _scratch(cache_dir: Path) -> Path:
    # Beside the cache, not in /tmp: the root tree and its disk image need about 3 GB,
    # more than a tmpfs /tmp may hold.
    scratch = cache_dir / "build"
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch


def _mmdebstrap(root: Path) -> None:
    hooks = [
        f'sync-in {GUEST_FILES} /',
        f'chroot "$1" systemctl enable {" ".join(ENABLED)}',
        f'chroot "$1" systemctl mask {" ".join(MASKED)}',
        # No host keys and no machine id in the template: each VM makes its own.
        'rm -f "$1"/etc/ssh/ssh_host_*',
        ': > "$1"/etc/machine-id',
        'rm -f "$1"/var/lib/dbus/machine-id',
        # The network is systemd-networkd's: resolv.conf is resolved's stub.
        'ln -sf ../run/systemd/resolve/stub-resolv.conf "$1"/etc/resolv.conf',
        'rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages',
        # What a build writes with the wall clock in it: logs (and files' times: _clamp_times).
        'rm -f "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log "$1"/var/log/apt/*.log'
        ' "$1"/var/cache/ldconfig/aux-cache "$1"/var/lib/systemd/random-seed',
    ]
    cmd = ["mmdebstrap", "--quiet", "--variant=apt", f"--include={','.join(PACKAGES)}"]
    cmd += [f"--customize-hook={hook}" for hook in hooks]
    cmd += [SUITE, str(root)]
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise BuildError(f"mmdebstrap failed: {tail}")
    _clamp_times(root, int(SOURCE_DATE_EPOCH))


def _clamp_times(root: Path, epoch: int) -> None:
    """No file newer than SOURCE_DATE_EPOCH (what mmdebstrap's tarball mode does, and its
    directory mode does not): maintainer scripts leave the build's wall-clock times."""
    for top, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = os.path.join(top, name)
            if os.lstat(path).st_mtime > epoch:
                os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


def _copy_boot_files(root: Path, stage: Path) -> None:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise BuildError("the Debian root has no kernel or initramfs in /boot")
    shutil.copy(kernels[-1], stage / "vmlinuz")
    shutil.copy(initrds[-1], stage / "initrd.img")
