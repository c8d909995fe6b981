"""Registering templates: the built-in busybox and Debian ones, an operator's qcow2 (QEMU nodes), the
busybox image and an operator's own image (docker nodes).

Control-plane glue: it builds through the drivers (engines/libvirt, engines/docker) and
writes VmTemplate rows, so it lives with the templates' model, not among the Django-free
drivers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from django.conf import settings

from engines.libvirt import debian_builder, template_builder
from nodes.models import Node
from nodes.registry import get_engine
from vms.models import CLOUD_INIT, EXEC, FILES, GUEST_AGENT, VmTemplate

BUSYBOX_TEMPLATE = "tt/busybox"
BUSYBOX_IMAGE_TEMPLATE = "tt/busybox-container"
MIB = 1024 * 1024
DEBIAN_TEMPLATE = "debian/12"
# Measured with bench/debian_guest.py: it boots to SSH with cloud-init done in 160 MiB and
# panics (out of memory) in 128 MiB; 256 leaves room for what a user runs in it.
DEBIAN_MIN_MEM_MB = 256


def install_busybox_template(node: Node, *, name: str = BUSYBOX_TEMPLATE,
                             cache_dir: Path = template_builder.DEFAULT_CACHE) -> VmTemplate:
    """Build (or reuse) the busybox template, put it in the node's pool, register it."""
    test_shell = settings.TT_TEMPLATE_TEST_SHELL
    built = template_builder.build(cache_dir, test_shell=test_shell)
    root_name = _upload(node, built)
    tag = built.rootfs.parent.name
    kernel, initrd = f"{tag}-vmlinuz", f"{tag}-initrd.img"
    template, _ = VmTemplate.objects.update_or_create(
        name=name,
        defaults=dict(
            path=root_name, kernel=kernel, initrd=initrd, cmdline=built.cmdline,
            size_mb=built.size_mb, min_cpu=1, min_mem_mb=96, compatible_engines=["libvirt"],
            features=["http:80", *(["telnet:23"] if test_shell else []), "serial-ready-marker"],
            default_ports=["80"],  # not the test shell's 23: forwarding it is a choice to make knowingly
            enabled=True,
            memo=(
                f"Busybox on Debian's cloud kernel {built.kernel_version}: DHCP address from its MAC, "
                "HTTP on 80 naming the VM and its IP, powers off on the ACPI button."
                + (" WARNING: an UNAUTHENTICATED root shell listens on TCP 23, for tests. Anyone who "
                   "reaches that port owns the VM: forward it only if you mean to (the VMs of the "
                   "same Env and of peered Envs reach it too). Its serial console (the portal's "
                   "Console) is an unauthenticated root shell too: whoever may open the VM's console "
                   "owns the VM. Build the template without both with TT_TEMPLATE_TEST_SHELL=0."
                   if test_shell else " No shell listens on the network; the serial console asks for "
                   "a login, and root's password is locked.")
            ),
        ),
    )
    return template


def install_debian_template(node: Node, *, name: str = DEBIAN_TEMPLATE,
                            cache_dir: Path = template_builder.DEFAULT_CACHE) -> VmTemplate:
    """Build (or reuse) the Debian 12 template, put it in the node's pool, register it."""
    built = debian_builder.build(cache_dir)
    root_name = _upload(node, built)
    tag = built.rootfs.parent.name
    template, _ = VmTemplate.objects.update_or_create(
        name=name,
        defaults=dict(
            path=root_name, kernel=f"{tag}-vmlinuz", initrd=f"{tag}-initrd.img", cmdline=built.cmdline,
            size_mb=built.size_mb, min_cpu=1, min_mem_mb=DEBIAN_MIN_MEM_MB, compatible_engines=["libvirt"],
            features=["ssh:22", CLOUD_INIT, GUEST_AGENT, EXEC, FILES], default_ports=["22"], enabled=True,
            memo=(
                f"Debian 12 (bookworm) with Debian's cloud kernel {built.kernel_version}, systemd-networkd, "
                "OpenSSH, cloud-init and qemu-guest-agent. Log in as tt (sudo without a password) with "
                "the SSH keys you keep on the SSH keys page; each VM makes its own host keys on first boot. "
                "Give a VM your own #cloud-config as its user_data."
            ),
        ),
    )
    return template


def _upload(node: Node, built: template_builder.BuiltTemplate) -> str:
    """Kernel, initramfs and root disk into the node's pool; the root volume's name."""
    engine = get_engine(node)
    tag = built.rootfs.parent.name  # <kind>-<fingerprint>
    engine.upload_volume(f"{tag}-vmlinuz", str(built.kernel), "raw")
    engine.upload_volume(f"{tag}-initrd.img", str(built.initrd), "raw")
    root_name = f"{tag}-root.qcow2"
    engine.upload_volume(root_name, str(built.rootfs), "qcow2")
    return root_name


def register_qcow2_template(node: Node, *, name: str, image: Path, memo: str = "",
                            min_mem_mb: int = 256) -> VmTemplate:
    """An operator's own full-disk qcow2 image (with its own bootloader)."""
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(image)], capture_output=True, text=True, check=True
    ).stdout)
    if info.get("format") != "qcow2":
        raise ValueError(f"{image} is {info.get('format')}, not qcow2 (convert it with qemu-img convert)")
    size_mb = -(-int(info["virtual-size"]) // (1024 * 1024))
    volume = f"tpl-{name.replace('/', '-')}.qcow2"
    get_engine(node).upload_volume(volume, str(image), "qcow2")
    template, _ = VmTemplate.objects.update_or_create(
        name=name,
        defaults=dict(path=volume, kernel="", initrd="", cmdline="", size_mb=size_mb,
                      min_mem_mb=min_mem_mb, compatible_engines=["libvirt"], memo=memo, enabled=True),
    )
    return template


def install_busybox_image(node: Node, *, name: str = BUSYBOX_IMAGE_TEMPLATE,
                          cache_dir: Path = template_builder.DEFAULT_CACHE) -> VmTemplate:
    """Build (or reuse) the busybox container image, import it on the docker node, register it."""
    from engines.docker import image_builder

    test_shell = settings.TT_TEMPLATE_TEST_SHELL
    built = image_builder.build(cache_dir, test_shell=test_shell)
    size = get_engine(node).import_rootfs(str(built.rootfs), built.reference, image_builder.CMD)
    template, _ = VmTemplate.objects.update_or_create(
        name=name,
        defaults=dict(
            path=built.reference, kernel="", initrd="", cmdline="", size_mb=-(-size // MIB), min_cpu=1,
            min_mem_mb=16, compatible_engines=["docker"],
            features=["http:80", *(["telnet:23"] if test_shell else []), EXEC, FILES], default_ports=["80"],
            enabled=True,
            memo=(
                "A busybox container built offline from Debian's busybox-static: the address its MAC "
                "implies, HTTP on 80 naming the VM and its IP, the same TT-READY line in its log as the "
                "QEMU template prints on its console."
                + (" WARNING: an UNAUTHENTICATED root shell listens on TCP 23, for tests (see tt/busybox)."
                   if test_shell else " No shell listens on the network.")
            ),
        ),
    )
    return template


def register_image_template(node: Node, *, name: str, image: str, memo: str = "",
                            min_mem_mb: int = 16) -> VmTemplate:
    """An operator's own container image, already on the docker node (nothing is pulled)."""
    size = get_engine(node).image_size(image)
    template, _ = VmTemplate.objects.update_or_create(
        name=name,
        defaults=dict(path=image, kernel="", initrd="", cmdline="", size_mb=-(-size // MIB),
                      min_mem_mb=min_mem_mb, compatible_engines=["docker"], memo=memo, enabled=True,
                      # podman's exec and archive APIs need nothing in the image
                      features=[EXEC, FILES]),
    )
    return template


# What tt_prepare_node's --template names install (nodes/management/commands).
INSTALLERS = {
    ("libvirt", "busybox"): install_busybox_template,
    ("libvirt", "debian"): install_debian_template,
    ("docker", "busybox"): install_busybox_image,
}
