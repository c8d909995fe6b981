"""`--wait`: follow an Env's operation with a bar per VM, until every VM runs and (unless
told not to) each forwarded TCP port accepts a connection.

Each VM's bar moves with the operation's progress and says what the operation last logged
about that VM ("web: booted"); it is full once the VM runs. A terminal gets live bars; a
CI log gets the operation's log lines as they come."""

from __future__ import annotations

import errno
import select
import socket
import sys
import time

from ttcli import connections, output
from ttclient.errors import OperationFailed, WaitTimeout

POLL = 0.2  # seconds between two reads of the operation and the Env, growing to POLL_MAX
POLL_MAX = 0.5
PROBE_EVERY = 0.1  # a fresh connection attempt per silent port this often
PROBE_GIVE_UP = 2.0  # an attempt unanswered this long is dropped (newer ones go on)


def vm_messages(log: str) -> dict[str, str]:
    """The last message the operation logged about each VM ("HH:MM:SS web: booted")."""
    last: dict[str, str] = {}
    for line in log.splitlines():
        _, _, text = line.partition(" ")
        name, sep, message = text.partition(": ")
        if sep and " " not in name:
            last[name] = message
    return last


class PortProbe:
    """Which of many host:port accept a TCP connection, found without waiting on any one.

    A port forwarded to a guest not yet on its network makes a connect hang (its SYN goes
    unanswered) rather than fail: so a fresh non-blocking attempt is started on each silent
    port every PROBE_EVERY seconds, older ones left running, and the first to complete wins.
    """

    def __init__(self, targets: list[tuple[str, int]]):
        self.pending = set(targets)
        self.attempts: dict[socket.socket, tuple[tuple[str, int], float]] = {}
        self.last_start = 0.0

    def step(self, wait: float) -> set[tuple[str, int]]:
        """Start attempts if due, wait up to `wait` seconds for some; the targets that answered."""
        now = time.monotonic()
        if now - self.last_start >= PROBE_EVERY:
            self.last_start = now
            for target in self.pending:
                self._start(target, now)
        answered: set[tuple[str, int]] = set()
        if self.attempts:
            _, writable, _ = select.select([], list(self.attempts), [], wait)
            for sock in writable:
                target, _ = self.attempts.pop(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    answered.add(target)
                sock.close()
        else:
            time.sleep(wait)
        for sock, (_, started) in list(self.attempts.items()):
            if now - started > PROBE_GIVE_UP:
                del self.attempts[sock]
                sock.close()
        self.pending -= answered
        return answered

    def _start(self, target: tuple[str, int], now: float) -> None:
        try:
            info = socket.getaddrinfo(*target, type=socket.SOCK_STREAM)[0]
        except OSError:
            return
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setblocking(False)
        if sock.connect_ex(info[4]) in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self.attempts[sock] = (target, now)
        else:  # refused at once: nothing listens yet
            sock.close()

    def close(self) -> None:
        for sock in self.attempts:
            sock.close()
        self.attempts.clear()


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
    conns = [c for vm in vms for c in connections.connections(vm) if c.protocol == "tcp"]
    for conn in conns:
        display.update(conn.vm, 100, f"port {conn.inner_port}: waiting for {conn.host}:{conn.port}")
    probe = PortProbe([(c.host, c.port) for c in conns])
    try:
        while probe.pending:
            probe.step(min(PROBE_EVERY, max(deadline - time.monotonic(), 0.0)))
            pending = [c for c in conns if (c.host, c.port) in probe.pending]
            for vm in {vm["name"] for vm in vms} - {c.vm for c in pending}:
                display.update(vm, 100, "running, ports answer")
            if pending and time.monotonic() >= deadline:
                silent = ", ".join(f"{c.vm} port {c.inner_port} ({c.host}:{c.port})" for c in pending)
                _pause_or_give_up(deadline, 0, f"no answer from {silent}")
    finally:
        probe.close()
