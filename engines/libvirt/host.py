"""Preparing the local host for real guests: daemons, qemu.conf, forwarding, address checks.

Everything here is idempotent and reports what it could not do instead of
half-working (the hosts this project targets run no systemd, so we start the daemons
ourselves).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
LIBVIRTD_CONF = Path("/etc/libvirt/libvirtd.conf")
# Each parked restore (engines/libvirt/parking.py) holds one of libvirtd's worker threads
# until it is claimed; libvirt's default 20 would leave calls queued behind 16 of them.
MAX_WORKERS = 64
LIBVIRT_SOCKET = "/var/run/libvirt/libvirt-sock"
REQUIRED_BINARIES = {
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "nft": "nftables",
    "dnsmasq": "dnsmasq-base",
}


class HostNotReady(RuntimeError):
    pass


def check_prerequisites() -> None:
    require(REQUIRED_BINARIES, root_for="libvirt's system daemon, bridges and nftables")


def require(binaries: dict[str, str], *, root_for: str) -> None:
    """Root, and each binary (-> the Debian package that has it); every problem in one error."""
    problems = []
    if os.geteuid() != 0:
        problems.append(f"must run as root ({root_for} need it)")
    for binary, package in binaries.items():
        if shutil.which(binary) is None and not Path("/usr/sbin", binary).exists():
            problems.append(f"{binary} is missing (apt-get install {package})")
    if problems:
        raise HostNotReady("; ".join(problems))


def ensure_qemu_conf(path: Path = QEMU_CONF) -> bool:
    """Guests run as root: Debian's default user makes every start re-probe QEMU (~70 s here).

    Returns True when the file changed (libvirtd must then be restarted).
    """
    return _ensure_settings(path, {"user": '"root"', "group": '"root"'},
                            "else libvirt re-probes QEMU at every start (70 s)")


def ensure_libvirtd_conf(path: Path = LIBVIRTD_CONF) -> bool:
    """Worker threads for the parked restores (MAX_WORKERS). True when the file changed
    (libvirtd must then be restarted)."""
    return _ensure_settings(path, {"max_workers": str(MAX_WORKERS)},
                            "each parked restore holds a worker thread (engines/libvirt/parking.py)")


def _ensure_settings(path: Path, wanted: dict[str, str], why: str) -> bool:
    text = path.read_text() if path.exists() else ""
    changed = False
    for key, value in wanted.items():
        pattern = re.compile(rf"^\s*{key}\s*=\s*(.*)$", re.M)
        match = pattern.search(text)
        if match and match.group(1).strip() == value:
            continue
        if match:
            text = pattern.sub(f"{key} = {value}", text, count=1)
        else:
            text += f"\n# TT Portal: {why}\n{key} = {value}\n"
        changed = True
    if changed:
        path.write_text(text)
    return changed


def _pids(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def socket_answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def ensure_daemons(*, restart_libvirtd: bool = False) -> list[str]:
    """Start virtlogd and libvirtd when not running; restart libvirtd after a config change."""
    done = []
    if not _pids("virtlogd"):
        subprocess.run(["virtlogd", "-d"], check=True)
        done.append("started virtlogd")
    if restart_libvirtd and _pids("libvirtd"):
        subprocess.run(["pkill", "-x", "libvirtd"], check=False)
        for _ in range(50):
            if not _pids("libvirtd"):
                break
            time.sleep(0.1)
        done.append("stopped libvirtd to apply qemu.conf")
    if not _pids("libvirtd"):
        subprocess.run(["libvirtd", "-d"], check=True)
        done.append("started libvirtd")
    for _ in range(100):
        if socket_answers(LIBVIRT_SOCKET):
            return done
        time.sleep(0.1)
    raise HostNotReady(f"libvirtd started but {LIBVIRT_SOCKET} does not answer")


def ensure_ip_forwarding() -> None:
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def allow_loopback_forwarding(bridge: str) -> None:
    """Let 127.0.0.1:PORT on the node reach a guest (the output-hook DNAT keeps the
    loopback source until masquerade; the kernel drops it on the bridge otherwise)."""
    Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").write_text("1\n")


def reserved_networks() -> list[tuple[ipaddress.IPv4Network, str]]:
    """Address ranges the VM network must not cover: routes and DNS servers of this host."""
    found: list[tuple[ipaddress.IPv4Network, str]] = []
    out = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        first = line.split()[0] if line.split() else ""
        if first in {"default", "broadcast", "local", "unreachable", "multicast"}:
            if "via" in line.split():
                gw = line.split()[line.split().index("via") + 1]
                found.append((ipaddress.IPv4Network(gw), f"gateway {gw}"))
            continue
        try:
            net = ipaddress.IPv4Network(first, strict=False)
        except ValueError:
            continue
        if " dev ttbr" in line or net.is_loopback:
            continue  # our own bridges
        found.append((net, f"route {line.strip()}"))
    resolv = Path("/etc/resolv.conf")
    if resolv.exists():
        for line in resolv.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    found.append((ipaddress.IPv4Network(parts[1]), f"DNS server {parts[1]}"))
                except ValueError:
                    continue
    return found


def check_vm_network(vm_network: str, bridge: str) -> None:
    """Refuse a VM network that would cut the host off from its DNS, gateway or routes."""
    net = ipaddress.IPv4Network(vm_network)
    for reserved, why in reserved_networks():
        if f" dev {bridge} " in why + " ":
            continue  # the route of this very network
        if net.overlaps(reserved):
            raise HostNotReady(f"VM network {vm_network} overlaps {why}: choose another range")
