"""Build the busybox container image's root filesystem from Debian's busybox-static, offline.

No registry is reachable from the nodes, so the image is a tarball of a root
filesystem that the engine imports (`POST /images/create?fromSrc=-`). It serves
the same page as the QEMU busybox template (the VM's name and address on port 80)
and prints the same `TT-READY name=… ip=…` line, to the container's log.

The tarball is built once per busybox package and builder version, with fixed
file times and owners, so the same inputs give the same bytes (and image name).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from engines.libvirt.template_builder import DEFAULT_CACHE, download_deb, run_tool

BUILDER_VERSION = 1
GUEST_FILES = Path(__file__).with_name("guest")
IMAGE_REPOSITORY = "tt/busybox"
# The container's command: the init script above, as PID 1.
CMD = "/init"
_EPOCH = 0  # file times in the tarball: fixed, so a rebuild gives the same bytes


@dataclass(frozen=True)
class BuiltImage:
    rootfs: Path  # the root filesystem tarball
    tag: str  # content fingerprint, the image's tag

    @property
    def reference(self) -> str:
        return f"{IMAGE_REPOSITORY}:{self.tag}"


def _fingerprint(busybox_deb: Path, test_shell: bool) -> str:
    h = hashlib.sha256(f"v{BUILDER_VERSION}:{busybox_deb.name}:{int(test_shell)}".encode())
    for f in sorted(GUEST_FILES.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def build(cache_dir: Path = DEFAULT_CACHE, *, test_shell: bool = True) -> BuiltImage:
    """Build (or reuse from the cache) the root filesystem tarball."""
    busybox_deb = download_deb("busybox-static", cache_dir / "debs")
    tag = _fingerprint(busybox_deb, test_shell)
    out = cache_dir / "images" / f"busybox-{tag}.tar"
    if out.exists():
        return BuiltImage(out, tag)
    with tempfile.TemporaryDirectory(prefix="tt-image-") as tmp:
        work = Path(tmp)
        run_tool("dpkg-deb", "-x", str(busybox_deb), str(work / "pkg"))
        busybox = work / "pkg" / "bin" / "busybox"
        applets = run_tool(str(busybox), "--list-full").split()
        staged = work / "rootfs.tar"
        with tarfile.open(staged, "w") as tar:
            for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "www", "tmp", "root", "proc",
                      "sys", "dev", "run", "var", "var/log"):
                _add(tar, d, kind=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
            _add(tar, "bin/busybox", data=busybox.read_bytes(), mode=0o755)
            for applet in sorted(set(applets)):
                if applet != "bin/busybox":
                    _add(tar, applet, kind=tarfile.SYMTYPE, link="/bin/busybox")
            _add(tar, "init", data=(GUEST_FILES / "init").read_bytes(), mode=0o755)
            _add(tar, "etc/passwd", data=b"root::0:0:root:/root:/bin/sh\n")
            _add(tar, "etc/group", data=b"root:x:0:\n")
            if test_shell:
                _add(tar, "etc/tt-test-shell", data=b"an unauthenticated root shell on TCP 23, for tests\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        staged.replace(out)
    return BuiltImage(out, tag)


def _add(tar: tarfile.TarFile, name: str, *, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
         mode: int = 0o644, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, _EPOCH, 0, 0
    info.linkname = link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)
