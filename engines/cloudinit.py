"""A VM's cloud-init NoCloud seed: what it holds, and the small CIDATA disk that carries it.

cloud-init finds the seed as a filesystem labelled CIDATA holding `meta-data` and
`user-data`. meta-data gives the instance id (a new one means a first boot:
fresh host keys, the user made again), the hostname, and the public keys, which
the template's cloud.cfg hands to its default user `tt`. user-data is the VM
owner's own `#cloud-config`, untouched; so what they write cannot lose them the
`tt` user and its keys unless they set `users:` without `default`.

meta-data is written as JSON, which YAML reads as it is: no YAML emitter needed,
and no value can break out of its field.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

LABEL = "CIDATA"
EMPTY_USER_DATA = "#cloud-config\n{}\n"
SEED_KIB = 2048  # room for 100 16384-bit RSA keys and the largest user-data allowed


@dataclass(frozen=True)
class CloudInitSpec:
    hostname: str
    instance_id: str
    ssh_keys: tuple[str, ...] = ()  # authorized_keys lines
    user_data: str = ""  # a "#cloud-config" document, or "" for none


def seed_files(spec: CloudInitSpec) -> dict[str, bytes]:
    meta = {
        "instance-id": spec.instance_id,
        "local-hostname": spec.hostname,
        "public-keys": list(spec.ssh_keys),
    }
    return {
        "meta-data": (json.dumps(meta, indent=1) + "\n").encode(),
        "user-data": (spec.user_data or EMPTY_USER_DATA).encode(),
    }


def write_seed(spec: CloudInitSpec, dest: Path) -> Path:
    """A vfat image labelled CIDATA holding the seed's files, at `dest`."""
    dest.unlink(missing_ok=True)
    _tool("mkfs.vfat", "-n", LABEL, "-C", str(dest), str(SEED_KIB))
    with tempfile.TemporaryDirectory(prefix="tt-seed-") as tmp:
        for name, content in seed_files(spec).items():
            path = Path(tmp) / name
            path.write_bytes(content)
            _tool("mcopy", "-o", "-i", str(dest), str(path), f"::{name}")
    return dest


def _tool(*cmd: str) -> None:
    # Debian keeps mkfs.vfat in /usr/sbin, outside the PATH of a process not run as root.
    program = shutil.which(cmd[0]) or shutil.which(cmd[0], path="/usr/sbin:/sbin") or cmd[0]
    result = subprocess.run((program, *cmd[1:]), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {result.stderr.strip() or result.stdout.strip()}")
