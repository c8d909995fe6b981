"""Commands and files in a running QEMU guest, through its guest agent (qemu-ga) over libvirt.

Every call is one JSON command of qemu-ga's protocol sent by `libvirt_qemu.qemuAgentCommand`:
`guest-exec` and `guest-exec-status` run a process, `guest-file-open/read/write/seek/close`
move bytes. qemu-ga has no kill, no working directory, no user switch and no way to read a
running process's output (it hands `out-data` over only once the process has exited, and
keeps up to 16 MiB of it in memory, while libvirt carries no reply past 4 MiB: measured, a
5 MiB output captured that way fails the call). So a command runs under a small /bin/sh
wrapper (EXEC_WRAPPER) that:

- `cd`s to the request's cwd, exports its env, switches to its user with `runuser -u` (util-linux,
  on every Debian);
- sends its stdout and stderr to two files we opened beforehand (guest-file-open "w+", in
  EXEC_DIR, root's alone), and removes their names at once: our open handles then read
  the output at increasing offsets while the process runs (how `on_output` streams a build) and
  the files go with the last handle closed. Regular files, not FIFOs: qemu-ga reads a file
  with fread() on a non-blocking descriptor, and a FIFO with less data than asked would fail
  the read and lose what it did read.

A timeout kills the process and its descendants (KILL_SCRIPT, through guest-exec again). Not
by making it a process-group leader with setsid(1): under TCG every program started in the
guest costs ~0.3 s, and that would be one more for every command; the tree walk costs
nothing until a timeout. A descendant that already left the tree (double fork) survives it.

The user's argv goes to the wrapper as positional arguments ("$@"): no shell ever parses it.
The wrapper's own complaints (no such cwd or user) go to qemu-ga's captured stdout, which the
process never writes to (its fds 1 and 2 are the files), so they cannot be mistaken for the
command's output.

What it costs, measured on a Debian 12 guest under TCG (1 vCPU, host moderately loaded): 50
runs of `true` took p50 269 ms, p95 359 ms, against 84 and 178 ms for a bare guest-exec of
/bin/true and its status polls; the difference is the shell, the `rm` and ~8 agent calls
(opening, reading and closing the two files). Each program started costs ~80 ms there.

Caveat: a command's output is written to the guest's disk (EXEC_DIR) while it runs (on its disk, freed
when the command ends), so a command printing gigabytes uses as much of the guest's disk
meanwhile. Plain Python, no Django.
"""

from __future__ import annotations

import base64
import json
import logging
import posixpath
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from typing import Any

import libvirt
import libvirt_qemu

from engines.errors import EngineError, ErrorCode
from engines.guest_io import (
    ExecRequest,
    ExecResult,
    FileEntry,
    GuestFile,
    GuestPathDenied,
    GuestPathMissing,
    GuestUnreachable,
    OutputSink,
)

log = logging.getLogger(__name__)

# Bytes of a file per guest-file-read and per guest-file-write call. Measured on a Debian 12
# guest (qemu-ga 7.2, 1 vCPU under TCG, host loaded): 64 MiB through put_file/get_file with
# write/read chunks of 64/256 KiB went up at 0.61 MB/s and down at 2.42; 128 KiB/1 MiB 0.66
# and 2.54; 128 KiB/2 MiB 0.77 and 2.06. Reads of an 8 MiB file alone: 64 KiB 1.7 MB/s,
# 256 KiB 3.1, 1 MiB 3.3, 2 MiB 2.3; a reply past 4 MiB (libvirt's RPC string) fails, and one
# past 10 MiB breaks the domain's agent channel until the guest reboots. Writes cost qemu-ga
# ~1 µs a byte of JSON whatever the chunk (64 KiB 1.08 MB/s, 128 KiB 1.11, 192 KiB 0.99 a
# call), and a write message of ~300 KB or more (224 and 256 KiB of data) hung the agent until
# libvirt's timeout: 128 KiB keeps well under that cliff.
READ_CHUNK = 1024 * 1024
WRITE_CHUNK = 128 * 1024
# Bytes asked per read of a running command's output (qemu-ga allocates what is asked).
OUTPUT_CHUNK = 256 * 1024
# stdin up to this many bytes goes inline with guest-exec (its input-data, in the same message
# as a write's data); more is first written to a file in the guest that the process reads.
STDIN_INLINE_MAX = WRITE_CHUNK
# How long one agent call may take before the agent counts as not answering (seconds).
CALL_TIMEOUT_S = 15
# Polling a running command: the first wait, doubling up to the last (seconds).
POLL_FIRST_S = 0.002
POLL_MAX_S = 0.05
# How long a killed process may take to be reaped before we give up on it (seconds).
KILL_WAIT_S = 10.0
# Where a command's output files live while it runs: a directory of root's alone (made on
# first use), because qemu-ga makes every new file 0666 whatever the umask (seen on Debian 12's
# 7.2), and in /tmp any guest user could read or forge a command's output meanwhile.
EXEC_DIR = "/var/lib/tt-agent"
# A directory listing bigger than this (bytes of `find` output, ~60 bytes an entry) fails.
LIST_OUTPUT_LIMIT = 16 * 1024 * 1024
# Paths longer than Linux's PATH_MAX are refused before asking the guest.
PATH_MAX = 4096

# $0: the output files' base name; $1 cwd or ""; $2 user or ""; $3 "1" when stdin is in
# "$0.in"; $4 how many NAME=VALUE env pairs follow; then the pairs; then the argv. Env is
# exported last, so that a PATH of the user's cannot hide the tools the wrapper calls.
EXEC_WRAPPER = r"""
exec 3>>"$0.out" 4>>"$0.err"
if [ -n "$3" ]; then exec 0<"$0.in"; fi
(rm -f -- "$0.out" "$0.err" "$0.in" </dev/null >/dev/null 2>&1 &)
cwd=$1 user=$2 n=$4
shift 4
if [ -n "$cwd" ]; then
  [ -d "$cwd" ] || { echo tt:cwd-missing; exit 125; }
  cd -- "$cwd" 2>/dev/null || { echo tt:cwd-denied; exit 125; }
fi
if [ -n "$user" ]; then
  /usr/bin/id -u -- "$user" >/dev/null 2>&1 || { echo tt:user-missing; exit 125; }
fi
while [ "$n" -gt 0 ]; do export "$1"; shift; n=$((n - 1)); done
if [ -n "$user" ]; then set -- /usr/sbin/runuser -u "$user" -- "$@"; fi
exec "$@" >&3 2>&4 3>&- 4>&-
"""

# Kills $0 and all its descendants: each generation is stopped before its children are
# looked for (a stopped process forks no more), then all get SIGKILL. Shell builtins only
# (reading /proc/*/stat), so it costs no program start; the guest may have no procps.
KILL_SCRIPT = r"""
gen=$0 all=
while [ -n "$gen" ]; do
  kill -s STOP $gen 2>/dev/null
  all="$all $gen" next=
  for stat in /proc/[0-9]*/stat; do
    read -r line <"$stat" 2>/dev/null || continue
    set -- ${line##*) }
    case " $gen " in *" $2 "*) pid=${stat#/proc/}; next="$next ${pid%/stat}";; esac
  done
  gen=$next
done
kill -s KILL $all 2>/dev/null
exit 0
"""

# Makes the directory $0 an upload is staged in, inside the target's directory $1 (so the
# last step is a rename within one filesystem) and of root's alone: qemu-ga makes new files
# 0666, and a guest user must not write into an upload while it comes.
STAGE_SCRIPT = r"""
[ -d "$1" ] || { echo tt:nodir; exit 1; }
mkdir -m 0700 -- "$0"
"""

# Installs the uploaded file $1 (in its staging directory) at $2: a file it replaces lends it
# its owner and mode, a new one is root's and 0644; then the owner $4 and mode $3 asked for;
# then a rename (atomic: `path` is never a half-written file). Any refusal removes the stage.
INSTALL_SCRIPT = r"""
t=$1 p=$2 m=$3 o=$4
fail() { rm -rf -- "${t%/*}"; echo "tt:$1"; exit 1; }
[ -d "$p" ] && fail isdir
if [ -e "$p" ]; then
  chown --reference="$p" -- "$t" && chmod --reference="$p" -- "$t" || fail keep
else
  chmod 0644 -- "$t" || fail keep
fi
if [ -n "$o" ]; then chown -- "$o" "$t" || fail owner; fi
if [ -n "$m" ]; then chmod -- "$m" "$t" || fail mode; fi
mv -fT -- "$t" "$p" || fail rename
rmdir -- "${t%/*}"
"""

# Lists directory $0: exit 3 when it is missing, 4 when not a directory, 5 when not readable;
# one NUL-ended record per entry: type, size, permission bits (octal), mtime, name.
LIST_SCRIPT = r"""
[ -e "$0" ] || exit 3
[ -d "$0" ] || exit 4
[ -r "$0" ] && [ -x "$0" ] || exit 5
exec find -H "$0" -mindepth 1 -maxdepth 1 -printf '%y\t%s\t%m\t%T@\t%f\0'
"""
KINDS = {"f": "file", "d": "dir", "l": "link"}

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?")
OWNER = re.compile(rf"{USER_NAME.pattern}(:{USER_NAME.pattern})?")

# libvirt's errors that mean no agent answers: none connected, it timed out, the VM stopped.
UNREACHABLE_CODES = frozenset({
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_AGENT_UNSYNCED, libvirt.VIR_ERR_OPERATION_INVALID,
    libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_ERR_NO_DOMAIN,
})
# The end of qemu-ga's error for a failed open/read/write: the errno's strerror.
MISSING_ERRORS = ("No such file or directory", "Not a directory")
DENIED_ERRORS = ("Permission denied", "Operation not permitted", "Read-only file system")


# --- the agent ----------------------------------------------------------------------------


class Agent:
    """One domain's guest agent: its commands as calls that answer their `return` value or
    raise an EngineError (GuestUnreachable, GuestPathMissing, GuestPathDenied...)."""

    def __init__(self, dom: libvirt.virDomain, *, code: ErrorCode = ErrorCode.GUEST_EXEC):
        self.dom = dom
        self.code = code  # what any other failure is reported as

    def call(self, command: str, arguments: dict | None = None, *, path: str = "") -> Any:
        message = {"execute": command}
        if arguments is not None:
            message["arguments"] = arguments
        try:
            reply = libvirt_qemu.qemuAgentCommand(self.dom, json.dumps(message), CALL_TIMEOUT_S, 0)
        except libvirt.libvirtError as exc:
            raise agent_failure(exc, command, path, self.code) from exc
        return json.loads(reply)["return"]

    # guest-file-* --------------------------------------------------------------------
    def open(self, path: str, mode: str) -> int:
        return self.call("guest-file-open", {"path": path, "mode": mode}, path=path)

    def read(self, handle: int, count: int, *, path: str = "") -> tuple[bytes, bool]:
        """Up to `count` bytes at the handle's offset, and whether it hit the end."""
        answer = self.call("guest-file-read", {"handle": handle, "count": count}, path=path)
        return base64.b64decode(answer.get("buf-b64", "")), bool(answer.get("eof"))

    def write(self, handle: int, data: bytes, *, path: str = "") -> None:
        answer = self.call("guest-file-write", {"handle": handle, "buf-b64": base64.b64encode(data).decode()},
                           path=path)
        if answer.get("count") != len(data):
            raise EngineError(f"the guest wrote {answer.get('count')} of {len(data)} bytes to {path}",
                              code=ErrorCode.GUEST_FILES)

    def seek(self, handle: int, offset: int, whence: str) -> int:
        answer = self.call("guest-file-seek", {"handle": handle, "offset": offset, "whence": whence})
        return answer["position"]

    def close(self, handle: int) -> None:
        self.call("guest-file-close", {"handle": handle})

    def close_quietly(self, handle: int) -> None:
        try:
            self.close(handle)
        except EngineError as exc:
            log.warning("could not close guest file handle %s: %s", handle, exc)

    # guest-exec -------------------------------------------------------------------------
    def spawn(self, argv: list[str], *, stdin: bytes | None = None, capture: bool = False) -> int:
        arguments: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": capture}
        if stdin is not None:
            arguments["input-data"] = base64.b64encode(stdin).decode()
        return self.call("guest-exec", arguments)["pid"]

    def status(self, pid: int) -> dict:
        return self.call("guest-exec-status", {"pid": pid})

    def wait(self, pid: int, timeout: float) -> dict | None:
        """The exited process's status; None when it still runs after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        delay = POLL_FIRST_S
        while True:
            status = self.status(pid)
            if status["exited"]:
                return status
            if time.monotonic() >= deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)

    def run_script(self, script: str, *args: str, timeout: float = 60) -> tuple[int | None, str, str]:
        """A short /bin/sh script, its output captured by qemu-ga: (exit code, stdout, stderr)."""
        pid = self.spawn(["/bin/sh", "-c", script, *args], capture=True)
        status = self.wait(pid, timeout)
        if status is None:
            self.kill(pid)
            raise EngineError(f"a helper script in the guest ran past {timeout:g} s", code=self.code)
        return status.get("exitcode"), _text(status, "out-data"), _text(status, "err-data")

    def kill(self, pid: int) -> dict | None:
        """SIGKILL `pid` and its descendants; its last status once reaped (None if not)."""
        killer = self.spawn(["/bin/sh", "-c", KILL_SCRIPT, str(pid)])
        status = self.wait(pid, KILL_WAIT_S)
        self.wait(killer, KILL_WAIT_S)  # qemu-ga forgets a process only once asked after its end
        return status


def agent_failure(exc: libvirt.libvirtError, command: str, path: str, code: ErrorCode) -> EngineError:
    """The EngineError a failed agent command means: no agent, a path missing or denied..."""
    text = exc.get_error_message() or str(exc)
    where = f" {path}" if path else ""
    if exc.get_error_code() in UNREACHABLE_CODES or "agent is not connected" in text:
        return GuestUnreachable(f"no guest agent answers in the VM ({text})")
    if "has been disabled" in text or "has not been found" in text:
        return GuestUnreachable(f"the guest agent does not allow {command} ({text})")
    if text.endswith(MISSING_ERRORS):
        return GuestPathMissing(f"no such file or directory{where}", field="path")
    if text.endswith(DENIED_ERRORS):
        reason = text.rsplit(": ", 1)[-1]
        return GuestPathDenied(f"the guest refused access to{where}: {reason}", field="path")
    if text.endswith("Is a directory"):
        return EngineError(f"{path or 'the path'} is a directory, not a file", code=ErrorCode.INVALID,
                           field="path")
    return EngineError(f"{command} failed: {text}", code=code)


def _text(status: dict, key: str) -> str:
    return base64.b64decode(status.get(key, "")).decode("utf-8", errors="replace")


def _token() -> str:
    return secrets.token_hex(8)


# --- exec -----------------------------------------------------------------------------------


class _Output:
    """One stream of a running command, read from its file as it grows: what is kept (up to
    the limit), and each piece handed to `on_output` as it comes."""

    def __init__(self, agent: Agent, name: str, handle: int, limit: int, on_output: OutputSink | None):
        self.agent, self.name, self.handle = agent, name, handle
        self.limit, self.on_output = limit, on_output
        self.kept = bytearray()
        self.truncated = False

    def pull(self) -> None:
        """Read what the process has written since the last pull."""
        while self.on_output is not None or len(self.kept) < self.limit:
            data, _eof = self.agent.read(self.handle, OUTPUT_CHUNK)
            if data:
                room = self.limit - len(self.kept)
                self.kept += data[:room]
                self.truncated |= len(data) > room
                if self.on_output is not None:
                    self.on_output(self.name, data)
            if len(data) < OUTPUT_CHUNK:
                return

    def finish(self) -> None:
        """After the last pull: whether anything lies past what was kept (nobody read it)."""
        if not self.truncated and len(self.kept) >= self.limit:
            self.truncated = bool(self.agent.read(self.handle, 1)[0])


def check_request(request: ExecRequest) -> None:
    """What the guest agent cannot carry or the wrapper could misread: an EngineError naming
    the field (code invalid)."""
    def refuse(field: str, rule: str) -> EngineError:
        return EngineError(rule, code=ErrorCode.INVALID, field=field)

    if not request.argv or not request.argv[0]:
        raise refuse("command", "must name a program to run")
    if any("\0" in arg for arg in request.argv):
        raise refuse("command", "may not contain a NUL character")
    for name, value in request.env:
        if not ENV_NAME.fullmatch(name):
            raise refuse("env", f"{name!r} is not a variable name (letters, digits, _; not a digit first)")
        if "\0" in value:
            raise refuse("env", f"the value of {name} may not contain a NUL character")
    cwd = request.cwd
    if cwd and (not cwd.startswith("/") or "\0" in cwd or len(cwd) > PATH_MAX):
        raise refuse("cwd", "must be an absolute path without NUL characters")
    if request.user and not USER_NAME.fullmatch(request.user):
        raise refuse("user", f"{request.user!r} is not a user name")
    if not request.timeout > 0:
        raise refuse("timeout", "must be more than 0 seconds")


def run(dom: libvirt.virDomain, request: ExecRequest, on_output: OutputSink | None = None) -> ExecResult:
    """Run `request` in the guest and wait for it (see the module's note for how)."""
    check_request(request)
    agent = Agent(dom)
    started = time.monotonic()
    base = f"{EXEC_DIR}/.tt-exec-{_token()}"
    handles: list[int] = []
    pid = None
    spawned = False
    inline = len(request.stdin) <= STDIN_INLINE_MAX
    try:
        streams = []
        for name, suffix in (("stdout", ".out"), ("stderr", ".err")):
            handles.append(_open_in_exec_dir(agent, base + suffix))
            streams.append(_Output(agent, name, handles[-1], request.output_limit, on_output))
        if not inline:
            _write_file(agent, f"{base}.in", [request.stdin])
        argv = ["/bin/sh", "-c", EXEC_WRAPPER, base, request.cwd, request.user, "" if inline else "1",
                str(len(request.env)), *(f"{k}={v}" for k, v in request.env), *request.argv]
        pid = agent.spawn(argv, stdin=request.stdin if inline and request.stdin else None, capture=True)
        spawned = True  # the wrapper removes the files' names
        status, timed_out = _follow(agent, pid, streams, started + request.timeout)
        pid = None  # ended (or killed): nothing left to kill
        for stream in streams:
            stream.pull()
            stream.finish()
    finally:
        if pid is not None:  # we failed while it ran: it must not outlive the request
            try:
                agent.kill(pid)
            except EngineError as exc:
                log.warning("could not kill guest process %s: %s", pid, exc)
        for handle in handles:
            agent.close_quietly(handle)
        if not spawned and (handles or not inline):
            _remove_quietly(agent, f"{base}.out", f"{base}.err", f"{base}.in")
    # The process never writes to qemu-ga's pipes (its fds 1 and 2 are the files): anything
    # there is the wrapper's, which then did not start it.
    said, complained = _text(status, "out-data"), _text(status, "err-data")
    if not timed_out and (said or complained):
        _raise_refusal(said, complained, request)
    return ExecResult(
        exit_code=None if timed_out else status.get("exitcode"),
        stdout=bytes(streams[0].kept), stderr=bytes(streams[1].kept),
        stdout_truncated=streams[0].truncated, stderr_truncated=streams[1].truncated,
        duration_ms=round((time.monotonic() - started) * 1000), timed_out=timed_out,
        signal=status.get("signal"),
    )


def _open_in_exec_dir(agent: Agent, path: str) -> int:
    try:
        return agent.open(path, "w+")
    except GuestPathMissing:  # the guest's first command since it was made: make the directory
        agent.run_script('mkdir -p -m 0700 -- "$0"', EXEC_DIR)
        return agent.open(path, "w+")


def _follow(agent: Agent, pid: int, streams: list[_Output], deadline: float) -> tuple[dict, bool]:
    """Poll the process, pulling its output meanwhile, until it exits or the deadline passes
    (then it is killed): its last status and whether it timed out."""
    delay = POLL_FIRST_S
    while True:
        status = agent.status(pid)  # before the pulls: once it says exited, they read all
        if status["exited"]:
            return status, False
        for stream in streams:
            if stream.on_output is not None:  # else its output is read once it ends
                stream.pull()
        now = time.monotonic()
        if now >= deadline:
            status = agent.kill(pid)
            if status is None:
                raise EngineError(f"the guest process {pid} ran past its timeout and could not be killed",
                                  code=ErrorCode.GUEST_EXEC)
            return status, True
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, POLL_MAX_S)


def _raise_refusal(said: str, complained: str, request: ExecRequest) -> None:
    if "tt:cwd-missing" in said:
        raise GuestPathMissing(f"no directory {request.cwd} in the guest", field="cwd")
    if "tt:cwd-denied" in said:
        raise GuestPathDenied(f"the guest refused to enter {request.cwd}", field="cwd")
    if "tt:user-missing" in said:
        raise EngineError(f"no user {request.user} in the guest", code=ErrorCode.INVALID, field="user")
    raise EngineError(f"the guest could not start the command: {(said + complained).strip()}",
                      code=ErrorCode.GUEST_EXEC)


# --- files ----------------------------------------------------------------------------------


def check_path(path: str) -> None:
    if not path.startswith("/") or "\0" in path or len(path) > PATH_MAX:
        raise EngineError(f"must be an absolute path without NUL characters, at most {PATH_MAX} bytes",
                          code=ErrorCode.INVALID, field="path")


def _pieces(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """`chunks` cut or joined into pieces of `size` bytes (the last one shorter), holding no
    more than one piece and one chunk in memory."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def _write_file(agent: Agent, path: str, chunks: Iterable[bytes]) -> int:
    """Write `chunks` to a new file at `path` in WRITE_CHUNK pieces; the bytes written."""
    handle = agent.open(path, "w")
    written = 0
    try:
        for piece in _pieces(chunks, WRITE_CHUNK):
            agent.write(handle, piece, path=path)
            written += len(piece)
    except BaseException:
        agent.close_quietly(handle)
        raise
    agent.close(handle)  # its flush may fail too (a full disk): then the upload failed
    return written


def put_file(dom: libvirt.virDomain, path: str, chunks: Iterable[bytes], *, mode: int | None = None,
             owner: str = "") -> int:
    """Write the file at `path` from `chunks`: first into a staging directory beside it (root's
    alone), then owner and mode, then renamed over `path`, so a failed upload never leaves a
    half file there. A replaced file's owner and mode carry over unless given; a new file is
    root's, 0644. Costs two short scripts in the guest besides the writes."""
    check_path(path)
    if mode is not None and not 0 <= mode <= 0o7777:
        raise EngineError("must be permission bits, 0 to 0o7777", code=ErrorCode.INVALID, field="mode")
    if owner and not OWNER.fullmatch(owner):
        raise EngineError(f"{owner!r} is not user or user:group", code=ErrorCode.INVALID, field="owner")
    directory, name = posixpath.split(path)
    if not name:
        raise EngineError("must name a file, not end with /", code=ErrorCode.INVALID, field="path")
    agent = Agent(dom, code=ErrorCode.GUEST_FILES)
    stage = posixpath.join(directory or "/", f".tt-upload-{_token()}")
    exit_code, said, errors = agent.run_script(STAGE_SCRIPT, stage, directory or "/")
    if "tt:nodir" in said:
        raise GuestPathMissing(f"no directory {directory or '/'} in the guest", field="path")
    if exit_code != 0:
        _raise_install_failure(said, errors, path, owner)
    temp = f"{stage}/{name}"
    try:
        written = _write_file(agent, temp, chunks)
    except BaseException:
        _remove_quietly(agent, stage)
        raise
    exit_code, said, errors = agent.run_script(INSTALL_SCRIPT, "tt-install", temp, path,
                                               "" if mode is None else f"{mode:o}", owner)
    if exit_code != 0:
        _raise_install_failure(said, errors, path, owner)
    return written


def _remove_quietly(agent: Agent, *paths: str) -> None:
    """Best effort (after a failure, which it must not hide)."""
    try:
        agent.run_script('rm -rf -- "$@"', "tt-rm", *paths, timeout=10)
    except EngineError as exc:
        log.warning("could not remove %s in the guest: %s", " ".join(paths), exc)


def _raise_install_failure(said: str, errors: str, path: str, owner: str) -> None:
    reason = errors.strip().splitlines()[-1] if errors.strip() else "no reason given"
    if "tt:isdir" in said:
        raise EngineError(f"{path} is a directory", code=ErrorCode.INVALID, field="path")
    if "tt:owner" in said:
        raise EngineError(f"the guest refused owner {owner}: {reason}", code=ErrorCode.INVALID, field="owner")
    if "tt:mode" in said:
        raise EngineError(f"the guest refused the mode: {reason}", code=ErrorCode.INVALID, field="mode")
    if "Permission denied" in reason or "Operation not permitted" in reason or "Read-only" in reason:
        raise GuestPathDenied(f"the guest refused to write {path}: {reason}", field="path")
    raise EngineError(f"could not put the file at {path}: {reason}", code=ErrorCode.GUEST_FILES)


def get_file(dom: libvirt.virDomain, path: str) -> GuestFile:
    """The file at `path`, read READ_CHUNK bytes a call as its chunks are iterated. Its first
    chunk is read here, so a missing, unreadable file or a directory raises at once."""
    check_path(path)
    agent = Agent(dom, code=ErrorCode.GUEST_FILES)
    handle = agent.open(path, "r")
    closed = False

    def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            agent.close_quietly(handle)

    try:
        first, eof = agent.read(handle, READ_CHUNK, path=path)  # a directory fails here: EISDIR
        if eof or len(first) < READ_CHUNK:
            size, eof = len(first), True
        else:  # its size, for a Content-Length; back to where the first chunk ended
            size = agent.seek(handle, 0, "end")
            agent.seek(handle, len(first), "set")
    except BaseException:
        close()
        raise

    def chunks() -> Iterator[bytes]:
        try:
            data, at_end = first, eof
            while data:
                yield data
                if at_end:
                    return
                data, at_end = agent.read(handle, READ_CHUNK, path=path)
        finally:
            close()

    return GuestFile(chunks=chunks(), size=size, close=close)


def list_dir(dom: libvirt.virDomain, path: str) -> list[FileEntry]:
    """The entries of the directory at `path`, by name (`find` in the guest)."""
    check_path(path)
    result = run(dom, ExecRequest(argv=("/bin/sh", "-c", LIST_SCRIPT, path), timeout=60,
                                  output_limit=LIST_OUTPUT_LIMIT))
    if result.exit_code == 3:
        raise GuestPathMissing(f"no such directory {path}", field="path")
    if result.exit_code == 4:
        raise EngineError(f"{path} is not a directory", code=ErrorCode.INVALID, field="path")
    if result.exit_code == 5:
        raise GuestPathDenied(f"the guest refused to list {path}", field="path")
    if result.stdout_truncated:
        raise EngineError(f"{path} has too many entries to list (over {LIST_OUTPUT_LIMIT} bytes of them)",
                          code=ErrorCode.GUEST_FILES)
    if result.exit_code != 0 or result.timed_out:
        reason = result.stderr.decode("utf-8", errors="replace").strip() or "timed out"
        raise EngineError(f"could not list {path}: {reason}", code=ErrorCode.GUEST_FILES)
    return sorted((_entry(record) for record in result.stdout.split(b"\0") if record), key=lambda e: e.name)


def _entry(record: bytes) -> FileEntry:
    kind, size, mode, mtime, name = record.split(b"\t", 4)
    return FileEntry(name=name.decode("utf-8", errors="replace"), kind=KINDS.get(kind.decode(), "other"),
                     size=int(size), mode=int(mode, 8), mtime=float(mtime))
