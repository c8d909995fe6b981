"""Can this host run Firecracker VMs? What a node lacks, said plainly.

`check_host` refuses a node (tt_prepare_node --kind firecracker); the engine's
health() reports the same findings on the node's admin page. HostNotReady is the
libvirt preparation's own exception, so one `except` serves every node kind.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from engines.kvm import kvm_problem
from engines.libvirt.host import HostNotReady

__all__ = ["HostNotReady", "binary_version", "check_host", "find_binary", "runtime_problems"]


def find_binary(setting: str, default: str) -> str | None:
    """The executable a node setting names: a path, a name on PATH, or (empty) `default` on PATH."""
    name = setting or default
    if "/" in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(name)


def binary_version(path: str, *, timeout: float = 5.0) -> str | None:
    """"v1.16.1" from `<path> --version` ("Firecracker v1.16.1", "Jailer v1.16.1"); None
    when it does not answer like one."""
    try:
        result = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    words = (result.stdout.strip().splitlines() or [""])[0].split()
    if result.returncode != 0 or len(words) < 2 or not words[1].startswith("v"):
        return None
    return words[1]


def runtime_problems(binary: str, jailer: str) -> tuple[list[str], str]:
    """(what keeps VMs from running here, what was found): KVM, firecracker, the jailer."""
    problems: list[str] = []
    found: list[str] = []
    kvm = kvm_problem()
    if kvm:
        problems.append(f"no usable KVM: {kvm}")
    for setting, default, what in ((binary, "firecracker", "firecracker"), (jailer, "jailer", "jailer")):
        if what == "jailer" and not jailer:
            continue
        path = find_binary(setting, default)
        if path is None:
            named = setting or f"{default} (on PATH)"
            problems.append(f"the {what} binary {named} is not found or not executable")
            continue
        version = binary_version(path)
        if version is None:
            problems.append(f"{path} --version does not answer like {what}")
        else:
            found.append(f"{what} {version}")
    if not kvm:
        found.append("KVM")
    return problems, ", ".join(found)


def check_host(binary: str, jailer: str) -> None:
    """Raise HostNotReady naming everything this host lacks to run Firecracker VMs."""
    problems, _found = runtime_problems(binary, jailer)
    if shutil.which("ip") is None:
        problems.append("ip is missing (apt-get install iproute2): the bridge and taps are made with it")
    if shutil.which("cp") is None:
        problems.append("cp is missing (coreutils): runtime images are copied with it")
    if os.geteuid() != 0:
        problems.append("must run as root (the bridge, taps and the jailer need it)")
    if problems:
        raise HostNotReady("; ".join(problems))
