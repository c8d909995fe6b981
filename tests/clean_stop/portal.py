"""`./tt.sh serve` (the web server and the task cluster, exactly as `./tt.sh run` ends) in a
session of its own, stopped the ways a person or a service manager stops it:

- `term`: SIGTERM to tt.sh alone (`kill PID`, systemd's KillMode=mixed, docker stop);
- `int-group`: SIGINT to the whole process group, as a terminal's Ctrl-C sends it;
- `term-group`: SIGTERM to the whole group (`kill -- -PGID`; systemd's default
  KillMode=control-group signals every process of the unit likewise).

A stop is over when tt.sh has exited and no process of its group is left (a zombie
waiting to be reaped counts as gone).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STOPS = {
    "term": (False, signal.SIGTERM),
    "int-group": (True, signal.SIGINT),
    "term-group": (True, signal.SIGTERM),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_members(pgid: int) -> list[str]:
    """The live (not zombie) processes of process group `pgid`: `pid command` each."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            found.append(f"{entry.name} {cmdline.strip()}")
    return found


class Portal:
    """One `./tt.sh serve`; `env` adds to (or overrides) this process's environment."""

    def __init__(self, log_path: Path, **env: str):
        self.log_path = log_path
        self.bind = f"127.0.0.1:{free_port()}"
        # INFO: readiness is read from the log (the cluster's "running", each worker's "ready").
        self.env = {**os.environ, "TT_BIND": self.bind, "DJANGO_SETTINGS_MODULE": "tests.clean_stop.settings",
                    "TT_Q_WORKERS": "2", "TT_LOG_LEVEL": "INFO", **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(["./tt.sh", "serve"], cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        """The web server answers /healthz and every worker of the cluster has started."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"./tt.sh serve exited ({self.proc.returncode}) before it was ready:\n{self.log()}")
        log = self.log()
        workers = int(self.env["TT_Q_WORKERS"])
        if not re.search(r"Q Cluster .* running\.", log) or log.count("ready for work") < workers:
            return False
        try:
            with urllib.request.urlopen(f"http://{self.bind}/healthz", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"./tt.sh serve not ready within {timeout} s:\n{self.log()}")
            time.sleep(0.1)

    def stop(self, how: str, *, limit: float) -> float | None:
        """Stop it `how` (one of STOPS); the seconds until it was over, or None if it was not
        over within `limit` seconds (then it is killed)."""
        assert self.proc is not None
        to_group, signum = STOPS[how]
        sent = time.monotonic()
        if to_group:
            os.killpg(self.proc.pid, signum)
        else:
            self.proc.send_signal(signum)
        while time.monotonic() - sent < limit:
            if self.proc.poll() is not None and not group_members(self.proc.pid):
                return time.monotonic() - sent
            time.sleep(0.05)
        return None

    def left(self) -> list[str]:
        """What is still running of it."""
        assert self.proc is not None
        return group_members(self.proc.pid)

    def close(self) -> None:
        """Kill whatever is left of it (after a failed stop)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
