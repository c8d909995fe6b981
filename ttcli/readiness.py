"""`--wait`: follow an Env's operation with a bar per VM, until every VM runs and (unless
told not to) each forwarded TCP port accepts a connection.

Each VM's bar moves with the operation's progress and says what the operation last logged
about that VM ("web: booted"); it is full once the VM runs. A terminal gets live bars; a
CI log gets the operation's log lines as they come."""

from __future__ import annotations

import socket
import sys
import time

from ttcli import connections, output
from ttclient.errors import OperationFailed, WaitTimeout

POLL = 0.25
POLL_MAX = 1.0
CONNECT_TIMEOUT = 1.0


def vm_messages(log: str) -> dict[str, str]:
    """The last message the operation logged about each VM ("HH:MM:SS web: booted")."""
    last: dict[str, str] = {}
    for line in log.splitlines():
        _, _, text = line.partition(" ")
        name, sep, message = text.partition(": ")
        if sep and " " not in name:
            last[name] = message
    return last


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            return True
    except OSError:
        return False


class Display:
    """Bars on a terminal, log lines elsewhere, nothing with --json."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.live = not quiet and sys.stderr.isatty()
        self.progress = None
        self.tasks: dict[str, int] = {}
        self.printed = 0

    def __enter__(self) -> Display:
        if self.live:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.fields[vm]:<12}"), BarColumn(), TaskProgressColumn(),
                                     TextColumn("{task.description}"), TimeElapsedColumn(),
                                     console=output.err_console(), transient=False)
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, vm: str, percent: int, message: str) -> None:
        if self.progress is None:
            return
        if vm not in self.tasks:
            self.tasks[vm] = self.progress.add_task(message, total=100, vm=vm)
        self.progress.update(self.tasks[vm], completed=percent, description=message)

    def log(self, op: dict) -> None:
        """The operation's new log lines (no terminal: one line each, as they come)."""
        if self.quiet or self.live:
            return
        lines = op.get("log", "").splitlines()
        for line in lines[self.printed:]:
            output.note(f"  {line}")
        self.printed = len(lines)


def wait_for_env(tt, env_id: int, op: dict | None, *, timeout: float, check_ports: bool,
                 quiet: bool) -> tuple[dict, list[dict]]:
    """Wait for the Env's operation (if any), then for its VMs to run and their TCP ports
    to answer. Returns the Env and its VMs in full; WaitTimeout past `timeout` seconds,
    OperationFailed if the operation failed."""
    deadline = time.monotonic() + timeout
    interval = POLL
    with Display(quiet) as display:
        while True:
            if op is not None and not op["is_done"]:
                op = tt.operations.get(op)
            env = tt.envs.get(env_id)
            messages = vm_messages(op["log"]) if op else {}
            percent = op["progress"] if op else 100
            for vm in env["vms"]:
                running = vm["status"] == "running"
                display.update(vm["name"], 100 if running else percent,
                               "running" if running else messages.get(vm["name"], vm["status"]))
            if op is not None:
                display.log(op)
                if op["is_done"] and op["status"] != "succeeded":
                    raise OperationFailed(op)
            statuses = {vm["status"] for vm in env["vms"]}
            if (op is None or op["is_done"]) and env["vms"] and statuses == {"running"}:
                break
            if (op is None or op["is_done"]) and statuses & {"error", "destroyed"}:
                raise OperationFailed({"id": op["id"] if op else None, "kind": "env up",
                                       "error_code": "vm_error", "error_message": _not_running(env, None)})
            _pause_or_give_up(deadline, interval, _not_running(env, op))
            interval = min(interval * 1.5, POLL_MAX)
        vms = [tt.vms.get(vm["id"]) for vm in env["vms"]]
        if check_ports:
            _wait_for_ports(vms, deadline, display)
    return env, vms


def _not_running(env: dict, op: dict | None) -> str:
    waiting = [f"{vm['name']} is {vm['status']}" for vm in env["vms"] if vm["status"] != "running"]
    if op is not None and not op["is_done"]:
        waiting.insert(0, f"operation {op['id']} at {op['progress']}%")
    return ", ".join(waiting) or "no VM yet"


def _pause_or_give_up(deadline: float, interval: float, waiting_for: str) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise WaitTimeout(f"not ready in time: {waiting_for} (the Env goes on being made; see `tt env show`)")
    time.sleep(min(interval, left))


def _wait_for_ports(vms: list[dict], deadline: float, display: Display) -> None:
    pending = [c for vm in vms for c in connections.connections(vm) if c.protocol == "tcp"]
    for conn in pending:
        display.update(conn.vm, 100, f"port {conn.inner_port}: waiting for {conn.host}:{conn.port}")
    while pending:
        pending = [c for c in pending if not port_open(c.host, c.port)]
        for vm in {vm["name"] for vm in vms} - {c.vm for c in pending}:
            display.update(vm, 100, "running, ports answer")
        if not pending:
            return
        silent = ", ".join(f"{c.vm} port {c.inner_port} ({c.host}:{c.port})" for c in pending)
        _pause_or_give_up(deadline, POLL_MAX, f"no answer from {silent}")
