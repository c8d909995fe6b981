"""The Firecracker process of one VM: launched, recognised, ended.

A pid alone is not an identity (the kernel reuses them), so a launch is
recorded as (pid, start time in clock ticks since boot) and a process is
taken for the VM's only while /proc shows that very pid, started at that very
tick, alive (a zombie is dead), with `--id <vm name>` on its command line
(firecracker is given it directly; the jailer passes it on) unless it is between
two programs of an exec.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")

# Children launched by this process, so the ones that ended are reaped (no zombies
# piling up in a long-lived worker); the VMs themselves do not depend on it.
_children: dict[int, subprocess.Popen] = {}
_children_lock = threading.Lock()


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    start_ticks: int
    vm_name: str

    def to_json(self) -> dict:
        return {"pid": self.pid, "start_ticks": self.start_ticks, "vm_name": self.vm_name}

    @classmethod
    def from_json(cls, data: dict) -> ProcessRecord:
        return cls(pid=int(data["pid"]), start_ticks=int(data["start_ticks"]), vm_name=str(data["vm_name"]))


def launch(argv: list[str], *, vm_name: str, log_path: Path, cwd: Path) -> ProcessRecord:
    """Start `argv` in its own session (a signal to the worker's group must not reach
    the VM), stdout and stderr appended to `log_path` (the guest's serial console)."""
    _reap_finished()
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=cwd, start_new_session=True,
        )
    with _children_lock:
        _children[child.pid] = child
    ticks = _start_ticks(child.pid)
    if ticks is None:  # it ended at once; the caller finds it dead and reads the log
        ticks = -1
    return ProcessRecord(pid=child.pid, start_ticks=ticks, vm_name=vm_name)


def _reap_finished() -> None:
    with _children_lock:
        for pid, child in list(_children.items()):
            if child.poll() is not None:
                del _children[pid]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ")".
    return stat[stat.rindex(")") + 2:].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22 of stat(5), the third being fields[0]


def is_running(record: ProcessRecord) -> bool:
    """The recorded process is alive and is still this VM's firecracker."""
    _reap_finished()
    fields = _stat_fields(record.pid)
    if fields is None or fields[0] in ("Z", "X", "x"):
        return False
    if int(fields[19]) != record.start_ticks:
        return False  # the pid was reused by another process
    try:
        cmdline = (PROC / str(record.pid) / "cmdline").read_bytes()
    except OSError:
        return False
    if not cmdline:
        # Between two programs (the jailer, or a wrapper, exec'ing firecracker) the kernel
        # shows no command line for a moment; the pid and start tick already say it is ours.
        return True
    argv = cmdline.split(b"\0")
    name = record.vm_name.encode()
    return any(argv[i] == b"--id" and argv[i + 1] == name for i in range(len(argv) - 1)) or (
        b"--id=" + name in argv
    )


def wait_until_ended(record: ProcessRecord, timeout: float) -> bool:
    """Poll until the process is gone; whether it went within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while is_running(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
    return True


def kill(record: ProcessRecord, *, timeout: float = 10.0) -> None:
    """End the process at once (SIGKILL: a VM forced off), and wait until it is gone."""
    if not is_running(record):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    if not wait_until_ended(record, timeout):
        raise RuntimeError(f"firecracker process {record.pid} of {record.vm_name} survived SIGKILL")
