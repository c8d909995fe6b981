"""How commands name things: an Env (`demo`, `alice/demo` for staff, or its id), a VM
(`demo/web`, `alice/demo/web`), a path in a VM (`demo/web:/etc/hostname`), a duration (`2h`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ttcli.errors import USAGE, Failure

_LABEL = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_VM_REF = re.compile(rf"^(?:(?P<owner>{_LABEL})/)?(?P<env>{_LABEL})/(?P<vm>{_LABEL})$")
_REMOTE = re.compile(rf"^(?P<vm>(?:{_LABEL}/){{1,2}}{_LABEL}):(?P<path>/.*)$")
_DURATION = re.compile(r"(\d+)\s*([smhdw])", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class VmRef:
    env: str  # as Envs.find takes it: name, owner/name or id
    vm: str

    def __str__(self) -> str:
        return f"{self.env}/{self.vm}"


def vm_ref(text: str) -> VmRef:
    match = _VM_REF.match(text)
    if not match:
        raise Failure(f"{text!r}: name a VM as ENV/VM (e.g. demo/web)", USAGE, field="vm")
    env = f"{match['owner']}/{match['env']}" if match["owner"] else match["env"]
    return VmRef(env=env, vm=match["vm"])


def remote_path(text: str) -> tuple[VmRef, str] | None:
    """(VM, absolute path) for `ENV/VM:/path`; None for a local path."""
    match = _REMOTE.match(text)
    if not match:
        return None
    return vm_ref(match["vm"]), match["path"]


def seconds(text: str) -> int:
    """A duration: `90` (seconds), `90s`, `30m`, `2h`, `1d`, `1h30m`."""
    compact = text.strip().replace(" ", "")
    if compact.isdigit():
        return int(compact)
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts).lower() != compact.lower():
        raise Failure(f"{text!r}: a duration is like 90s, 30m, 2h, 1d or 1h30m", USAGE, field="duration")
    return sum(int(n) * _UNITS[u.lower()] for n, u in parts)
