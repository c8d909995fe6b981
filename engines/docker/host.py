"""Preparing the local host as a docker node: podman serving the Docker API, with runc.

The hosts this project targets (Debian 12, no systemd) run no Docker engine, but podman
serves the Docker Engine API on a unix socket; it needs the runc runtime (crun fails on this host's hybrid
cgroups) and explicit ulimits. No systemd either, so the service is started here,
detached, and left running. Idempotent, like the QEMU node's preparation.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from engines.libvirt.host import HostNotReady, require, socket_answers

CONTAINERS_CONF = Path("/etc/containers/containers.conf")
DEFAULT_SOCKET = "/run/podman/podman.sock"
REQUIRED_BINARIES = {"podman": "podman", "runc": "runc", "nsenter": "util-linux", "nft": "nftables"}
# What containers.conf must hold; other settings an operator made are kept.
WANTED = {
    "containers": {"default_ulimits": '["nofile=1024:1024", "nproc=1024:1024"]'},
    "engine": {"runtime": '"runc"'},
}


def check_prerequisites() -> None:
    require(REQUIRED_BINARIES, root_for="podman's system service, bridges and nftables")


def ensure_containers_conf(path: Path = CONTAINERS_CONF) -> bool:
    """runc and the ulimits in containers.conf (TOML, edited per key); True if it changed."""
    text = path.read_text() if path.exists() else ""
    original = text
    for section, keys in WANTED.items():
        header = re.search(rf"^\[{section}\][ \t]*$", text, re.M)
        if header is None:
            text += f"\n[{section}]\n"
            header = re.search(rf"^\[{section}\][ \t]*$", text, re.M)
        end = re.search(r"^\[", text[header.end():], re.M)
        body_end = header.end() + (end.start() if end else len(text) - header.end())
        body = text[header.end():body_end]
        for key, value in keys.items():
            line = re.compile(rf"^[ \t]*{key}[ \t]*=.*$", re.M)
            if line.search(body):
                body = line.sub(f"{key} = {value}", body, count=1)
            else:
                body = f"\n{key} = {value}" + body
        text = text[:header.end()] + body + text[body_end:]
    if text != original:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return text != original


def socket_path(uri: str) -> str:
    if not uri.startswith("unix://"):
        raise HostNotReady(f"uri {uri!r}: a local docker node listens on a unix socket (unix:///…)")
    return uri.removeprefix("unix://")


def ensure_service(uri: str, *, restart: bool = False, log_path: Path = Path("/var/log/ttportal/podman.log"),
                   wait_s: float = 20.0) -> list[str]:
    """podman's API service on the node's socket, started detached when it does not answer."""
    path = socket_path(uri)
    done = []
    if restart and socket_answers(path):
        subprocess.run(["pkill", "-f", f"podman system service .*{re.escape(path)}"], check=False)
        done.append("stopped podman's service to apply containers.conf")
        deadline = time.monotonic() + 10
        while socket_answers(path) and time.monotonic() < deadline:
            time.sleep(0.1)
    if socket_answers(path):
        return done
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # cwd "/": the service outlives whoever started it, and conmon, which it forks for
        # every container, fails ("Failed to get working directory") once the directory it
        # inherited is gone (a checkout removed or replaced by an upgrade).
        subprocess.Popen(
            ["podman", "system", "service", "--time", "0", f"unix://{path}"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, cwd="/",
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if socket_answers(path):
            done.append(f"started podman's Docker API service on {path}")
            return done
        time.sleep(0.1)
    raise HostNotReady(f"podman system service started but {path} does not answer (see {log_path})")
