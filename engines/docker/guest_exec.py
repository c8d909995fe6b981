"""A command run in a container, through the Docker API's exec (served by podman).

`exec_create` + `exec_start` with the connection upgraded to a raw stream: stdin is written
into it and then half-closed, and stdout/stderr come back multiplexed in frames (an 8-byte
header: the stream, 3 zero bytes, the payload's length big-endian) as the command prints
them. One thread does both directions with `poll`, so a command that prints a lot before
reading its stdin cannot deadlock us, and the timeout is checked while waiting.

Killing at the timeout: the Docker API has no exec kill, and podman's has none either. But
podman's `exec_inspect` answers the exec's `Pid` as the *host's* PID, and runc makes that
process a session leader: on a node whose engine runs on this host (a unix socket, every
docker node here) its whole session, process group and descendants are killed with SIGKILL
from the host. That needs nothing in the image (no shell, no kill), works whatever user the
command runs as, and catches the children a shell forked. Every victim is checked to be in
the PID namespace of the container's first process, so a PID reused on the host is not hit
(nor one of an engine whose socket merely looks local). An engine reached over the network
(tcp://, ssh://) has PIDs we cannot see: there the command carries a marker in its
environment (TT_EXEC_MARK) and a second exec kills every process of the container whose
environment holds it (this needs `sh`, `tr`, `grep` and `kill`).

The cost is podman's: of an exec of `true` (about 150 ms here, 2 CPUs under load), runc's
exec and conmon take about 110 ms, our three API calls about 40 ms; `podman exec` itself
takes 150 to 200 ms on the same service. On a node whose podman runs on this host, the
engine runs `runc exec` itself instead (runc_exec.py, TT_DOCKER_EXEC): this path remains for
remote nodes and wherever runc cannot apply.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import socket
import struct
import time
import uuid

from docker.errors import APIError, NotFound

from engines.errors import EngineError, ErrorCode
from engines.guest_io import ExecRequest, ExecResult, OutputSink

log = logging.getLogger(__name__)

FRAME_HEADER = struct.Struct(">BxxxL")
STREAMS = {1: "stdout", 2: "stderr"}  # 0 would be stdin, never sent back
READ_SIZE = 64 * 1024
# After the kill, how long the output stream may take to end by itself before we close it
# (a process that left the session may still hold the container's end of the pipe).
KILL_GRACE_S = 2.0
# After the stream ended, how long podman may take to record the exit code.
EXIT_CODE_WAIT_S = 2.0
MARK_VARIABLE = "TT_EXEC_MARK"
_SEND_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ESHUTDOWN)


class ContainerNotRunning(EngineError):
    """The VM's container is missing or stopped: nothing to run a command in."""

    code = ErrorCode.ILLEGAL_STATE


class OutputKept:
    """What is kept of stdout and stderr: up to `limit` bytes each, the rest read and dropped."""

    def __init__(self, limit: int):
        self.limit = limit
        self.kept = {"stdout": bytearray(), "stderr": bytearray()}
        self.truncated = {"stdout": False, "stderr": False}

    def add(self, stream: str, data: bytes) -> None:
        kept = self.kept[stream]
        room = self.limit - len(kept)
        if len(data) > room:
            self.truncated[stream] = True
            data = data[:max(room, 0)]
        kept += data


class FrameReader:
    """The multiplexed stream cut into (stream name, payload) as bytes arrive, in any pieces."""

    def __init__(self):
        self.pending = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self.pending += data
        frames = []
        while len(self.pending) >= FRAME_HEADER.size:
            kind, length = FRAME_HEADER.unpack_from(self.pending)
            end = FRAME_HEADER.size + length
            if len(self.pending) < end:
                break
            payload = bytes(self.pending[FRAME_HEADER.size:end])
            del self.pending[:end]
            if kind in STREAMS and payload:
                frames.append((STREAMS[kind], payload))
        return frames


def container_running(api, container: str) -> None:
    """Raise ContainerNotRunning unless `container` exists and runs (the archive calls work
    on a stopped one; what the user asked of a running VM should not)."""
    try:
        state = api.inspect_container(container).get("State") or {}
    except NotFound:
        raise ContainerNotRunning(f"container {container} does not exist") from None
    if not state.get("Running") or state.get("Paused"):
        raise ContainerNotRunning(f"container {container} is not running")


def run_exec(api, container: str, request: ExecRequest, on_output: OutputSink | None = None, *,
             local: bool = True, kill: bool = True) -> ExecResult:
    """Run `request` in the running `container` (name or id) through `api` (the SDK's
    low-level APIClient) and wait for it, or kill it at its timeout. `local`: the engine
    runs on this host, so its exec PIDs are ours to kill (see the module's doc); `kill`
    False only for the killer itself, which is left to end (and its stream closed)."""
    started = time.monotonic()
    deadline = started + request.timeout
    mark = "" if local or not kill else uuid.uuid4().hex
    exec_id = _create(api, container, request, mark)
    response, sock, first = _start(api, exec_id, request.user)
    kept = OutputKept(request.output_limit)
    frames = FrameReader()

    def take(data: bytes) -> None:
        for stream, payload in frames.feed(data):
            kept.add(stream, payload)
            if on_output is not None:
                on_output(stream, payload)

    try:
        try:
            take(first)
            ended = _pump(sock, request.stdin, deadline, take)
        except BaseException:  # the caller gave up (its sink raised: a client went away)
            if kill:
                _kill(api, container, exec_id, mark)
            raise
        timed_out = not ended
        if timed_out and kill:
            _kill(api, container, exec_id, mark)
            _pump(sock, b"", time.monotonic() + KILL_GRACE_S, take)
    finally:
        with contextlib.suppress(OSError):
            sock.close()
        response.close()
    duration_ms = int((time.monotonic() - started) * 1000)
    exit_code = None if timed_out else _exit_code(api, exec_id)
    return ExecResult(
        exit_code=exit_code, stdout=bytes(kept.kept["stdout"]), stderr=bytes(kept.kept["stderr"]),
        stdout_truncated=kept.truncated["stdout"], stderr_truncated=kept.truncated["stderr"],
        duration_ms=duration_ms, timed_out=timed_out, signal=int(signal.SIGKILL) if timed_out else None,
    )


def _create(api, container: str, request: ExecRequest, mark: str) -> str:
    environment = [f"{name}={value}" for name, value in request.env]
    if mark:
        environment.append(f"{MARK_VARIABLE}={mark}")
    try:
        created = api.exec_create(
            container, list(request.argv), stdout=True, stderr=True, stdin=bool(request.stdin), tty=False,
            user=request.user, environment=environment or None, workdir=request.cwd or None,
        )
    except NotFound:
        raise ContainerNotRunning(f"container {container} does not exist") from None
    except APIError as exc:
        raise _start_error(exc, container, request.user) from exc
    return created["Id"]


def _start(api, exec_id: str, user: str):
    """exec_start with the connection upgraded: the HTTP response (kept open), its socket
    (non-blocking) and whatever bytes of the stream the HTTP layer had already read."""
    response = api._post_json(
        api._url("/exec/{0}/start", exec_id), headers={"Connection": "Upgrade", "Upgrade": "tcp"},
        data={"Tty": False, "Detach": False}, stream=True,
    )
    try:
        api._raise_for_status(response)
    except APIError as exc:
        response.close()
        raise _start_error(exc, "", user) from exc
    buffered = response.raw._fp.fp  # the reader http.client parsed the 101 answer with
    sock = getattr(buffered.raw, "_sock", buffered.raw)
    sock.setblocking(False)
    # Frames that came in the same read as the answer's headers sit in that reader's buffer:
    # read1 hands them over, and with the socket non-blocking never waits for more.
    first = b""
    with contextlib.suppress(BlockingIOError, OSError):
        first = buffered.read1(READ_SIZE) or b""
    return response, sock, first


def _start_error(exc: APIError, container: str, user: str) -> EngineError:
    text = f"{exc.explanation or exc}"
    lowered = text.lower()
    if "unable to find user" in lowered or "no matching entries in passwd" in lowered:
        return EngineError(f"no user {user!r} in the container: {text}", code=ErrorCode.INVALID, field="user")
    if "state improper" in lowered or "not running" in lowered or "is paused" in lowered:
        return ContainerNotRunning(f"container {container or ''} is not running: {text}".replace("  ", " "))
    return EngineError(f"the command could not be started: {text}", code=ErrorCode.GUEST_EXEC)


def _pump(sock: socket.socket, stdin: bytes, deadline: float, take) -> bool:
    """Write `stdin` (then half-close) and hand what is read to `take`, until the stream
    ends (True) or `deadline` passes (False)."""
    to_send = memoryview(stdin)
    closed_stdin = not stdin
    poller = select.poll()  # not select(): a busy worker may hold file descriptors past 1024
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        poller.register(sock, select.POLLIN if closed_stdin else select.POLLIN | select.POLLOUT)
        events = dict(poller.poll(remaining * 1000))
        flags = events.get(sock.fileno(), 0)
        if flags & select.POLLOUT and not closed_stdin:
            try:
                sent = sock.send(to_send[:READ_SIZE])
                to_send = to_send[sent:]
            except BlockingIOError:
                pass
            except OSError as exc:  # the command ended, or closed its stdin, unread
                if exc.errno not in _SEND_GONE:
                    raise
                to_send = to_send[:0]
            if not to_send:
                closed_stdin = True
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
        if flags & (select.POLLIN | select.POLLHUP | select.POLLERR):
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                return True
            if not data:
                return True
            take(data)


def _exit_code(api, exec_id: str) -> int | None:
    """The exit code podman recorded; it may record it a moment after the stream ended."""
    deadline = time.monotonic() + EXIT_CODE_WAIT_S
    while True:
        state = api.exec_inspect(exec_id)
        if not state.get("Running") or time.monotonic() > deadline:
            code = state.get("ExitCode")
            return None if code is None else int(code)
        time.sleep(0.02)


def _kill(api, container: str, exec_id: str, mark: str) -> None:
    if mark:
        _kill_by_mark(api, container, mark)
        return
    try:
        state = api.exec_inspect(exec_id)
    except APIError:
        return
    pid = int(state.get("Pid") or 0)
    if not state.get("Running") or pid <= 0:
        return
    try:  # the container's own first process: its namespace is the one the victims share
        init_pid = int(api.inspect_container(container)["State"].get("Pid") or 0)
    except (APIError, KeyError):
        return
    namespace = _namespace(init_pid, "/proc") if init_pid > 0 else None
    if namespace is None:
        log.warning("%s: exec %s outlived its timeout, and its PID is not on this host: "
                    "the engine is not local, left running", container, exec_id[:12])
        return
    kill_session(pid, namespace)


def kill_session(leader: int, namespace: str, proc: str = "/proc") -> list[int]:
    """SIGKILL the exec's process `leader` (a host PID), its session and process group and
    its descendants, each only if in the container's PID `namespace` (as /proc/PID/ns/pid
    reads); the PIDs signalled. Stopped first, then killed, so none forks a child we have
    not seen meanwhile."""
    victims: set[int] = set()
    for _ in range(3):  # a child forked while we looked is found by the next look
        found = _session_members(leader, proc) - victims
        found = {pid for pid in found if _namespace(pid, proc) == namespace}
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
        victims |= found
    for pid in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return sorted(victims)


def _session_members(leader: int, proc: str) -> set[int]:
    parents: dict[int, int] = {}
    members = {leader}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{proc}/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid, ppid, pgrp, session = int(entry.name), int(fields[1]), int(fields[2]), int(fields[3])
        parents[pid] = ppid
        if leader in (pgrp, session):
            members.add(pid)
    changed = True
    while changed:  # descendants that left the session (setsid) still go
        changed = False
        for pid, ppid in parents.items():
            if ppid in members and pid not in members:
                members.add(pid)
                changed = True
    return members


def _namespace(pid: int, proc: str) -> str | None:
    try:
        return os.readlink(f"{proc}/{pid}/ns/pid")
    except OSError:
        return None


def _kill_by_mark(api, container: str, mark: str) -> None:
    """An engine on another host: kill, from a second exec, every process of the container
    whose environment holds the mark."""
    script = (
        'for d in /proc/[0-9]*; do tr "\\0" "\\n" < "$d/environ" 2>/dev/null | grep -qx "$1=$2" '
        '&& kill -9 "${d#/proc/}" 2>/dev/null; done; true'
    )
    killer = ExecRequest(argv=("sh", "-c", script, "sh", MARK_VARIABLE, mark), timeout=10.0)
    with contextlib.suppress(EngineError):
        run_exec(api, container, killer, local=False, kill=False)
