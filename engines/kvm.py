"""Whether this host can run KVM guests, for every driver that needs to know (Django-free).

Decided from what the host says (the CPU's virtualisation flags, /dev/kvm's
access), never by starting a guest and waiting to see whether it is slow.
"""

from __future__ import annotations

import os
from pathlib import Path


def kvm_problem(dev: str = "/dev/kvm", cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """What keeps KVM from working here, in words; None when it is usable."""
    if not os.path.exists(dev):
        return f"{dev} is missing (no kvm module loaded, or no hardware virtualisation)"
    if not os.access(dev, os.R_OK | os.W_OK):
        return f"{dev} is not readable and writable by this user"
    try:
        flags = Path(cpuinfo).read_text()
    except OSError:
        return f"{cpuinfo} cannot be read"
    if " vmx" not in flags and " svm" not in flags:
        return f"the CPU offers no hardware virtualisation (no vmx or svm flag in {cpuinfo})"
    return None


def host_has_working_kvm() -> bool:
    """KVM only where the CPU offers it and /dev/kvm is usable; never by trying and waiting."""
    return kvm_problem() is None
