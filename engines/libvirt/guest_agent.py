"""Commands and files in a running QEMU guest, through its guest agent (qemu-ga) over libvirt.

Every call is one JSON command of qemu-ga's protocol sent by `libvirt_qemu.qemuAgentCommand`:
`guest-exec` and `guest-exec-status` run a process, `guest-file-open/read/write/seek/close`
move bytes. qemu-ga has no kill, no working directory, no user switch and no way to read a
running process's output (it hands `out-data` over only once the process has exited, and
keeps up to 16 MiB of it in memory, while libvirt carries no reply past 4 MiB: measured, a
5 MiB output captured that way fails the call). So a command runs under a small shell
wrapper (EXEC_WRAPPER): under the guest's /bin/busybox when it has one whose `sh` runs (our
Debian image has Debian's busybox-static: no dynamic loader, no relocations, so it starts some
60 ms sooner than dash under TCG), else under /bin/sh; learned once per guest (_Shells). The
wrapper:

- `cd`s to the request's cwd, exports its env, switches to its user with `runuser -u` (util-linux,
  on every Debian); under busybox, looks the program's name up in PATH itself and runs it by
  its path under the name given (`exec -a`), because Debian's busybox sh would otherwise run
  its own applet of that name (`ls`, `true`) rather than the guest's program;
- sends the command's stdout and stderr to two files in EXEC_DIR (root's alone), runs it in a
  subshell that `exec`s it (a program, never a shell builtin), waits for it, and says on
  qemu-ga's captured stdout how it ended and which of the two files hold anything
  ("tt:ended <status> <0|1> <0|1>"). We read a file only then, and only if it is not empty:
  `true` costs three agent calls (guest-exec, two guest-exec-status), not fifteen.
- When output is to stream (`on_output`), we open the two files beforehand instead
  (guest-file-open "w+") and read them at increasing offsets while the process runs. Regular
  files, not FIFOs: qemu-ga reads a file with fread() on a non-blocking descriptor, and a FIFO
  with less data than asked would fail the read and lose what it did read.

The files stay when the command has ended (a `rm` would be one more program start, ~80 ms
under TCG, and on the guest's one CPU even in the background): a file past KEEP_MAX is emptied
once read (guest-file-open "w"), and the names go in batches (_Sweeper: every SWEEP_EVERY
commands of this process in a guest, its next wrapper removes them in the background, with any
older than SWEEP_AGE_S). So the directory holds a few dozen small files, never more.

A timeout kills the process and its descendants (KILL_SCRIPT, through guest-exec again). Not
by making it a process-group leader with setsid(1): that would be one more program start for
every command; the tree walk costs nothing until a timeout. A descendant that already left
the tree (double fork) survives it.

The user's argv goes to the wrapper as positional arguments ("$@"): no shell ever parses it.
The wrapper's own complaints (no such cwd or user) go to qemu-ga's captured stdout, which the
command never writes to (its fds 1 and 2 are the files), so they cannot be mistaken for its
output. As in any shell, a status of 129 to 192 means a death by signal (status - 128): a
program that exits with such a status itself is reported as killed by that signal.

What it costs, measured on a Debian 12 guest under TCG (qemu-ga 7.2, 1 vCPU, no KVM; the host's
2 cores), step by step at host load 1.1: a guest-exec call 16 ms (p50; qemu-ga forks and
waits for the exec), a guest-exec-status 5 ms; at load 3.4 an empty guest-file-read or -close
8-15 ms, a guest-file-open "w+" 12-39 ms. libvirt's own part of a call is 0.2 ms (dom.info());
the rest is the guest's, answered on the vCPU the command runs on, so a poll that comes too
early slows the command (_Pace). From guest-exec to "exited" seen: /bin/true 83 ms, `sh -c
'exec /bin/true'` 144, the wrapper running `true` 176 (its two files made, its checks): every
program started costs 60-80 ms (mostly, it seems, the dynamic loader). A static busybox is the
exception: polled every 5 ms (host load 1.5-4), `sh -c 'exit 0'` under dash is seen ended after
96 ms (p50), under `busybox sh` after 30; the wrapper running `true` through `run`, 40 of each
alternating in blocks of 5, p50 124 ms, p95 181 under dash, and 57, 103 under busybox;
through the API (bench/exec_latency.py) p50 59 and 62 ms, p95 83 and 87 at host load 1.3-1.4,
where dash gave 96 and 152 at load 1.0 (a third run 99 and 168: the host's other work starves
the guest's TCG thread, and at load 3.4 p95 ranged 99-175 ms; two later runs at load 0.5-1.1:
p50 68 and 77, p95 97 and 105). Earlier,
with dash: 50 runs of `true` through `run`, alternating in blocks of 10 with the former version
(a `rm` per command in the background, both files always opened, read and closed, polls
from 2 ms doubling: 15 calls): at host load 1.1 p50 157 ms, p95 197 ms, against 281 and 405;
at load 4.2-4.5 p50 220, p95 275, against 342 and 431.

Caveat: a command's output is written to the guest's disk (EXEC_DIR) while it runs, so a
command printing gigabytes uses as much of the guest's disk until it ends. Plain Python, no
Django.
"""

from __future__ import annotations

import base64
import json
import logging
import posixpath
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
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
# Polling a process: the wait before the first poll, doubling up to the last (seconds). A
# command's first poll waits longer when the guest's quickest commands show it could not
# have ended sooner (_Pace): every poll costs the guest's CPU too (see the module's note).
POLL_FIRST_S = 0.002
POLL_MAX_S = 0.05
# How many of a guest's latest commands _Pace goes by, and the longest it waits to poll first:
# a guest whose latest commands were all long may run a quick one next.
PACE_WINDOW = 16
PACE_MAX_S = 0.15
# How long the probe of a guest's busybox may take before it counts as absent (seconds).
PROBE_TIMEOUT_S = 10.0
# How long a killed process may take to be reaped before we give up on it (seconds).
KILL_WAIT_S = 10.0
# Where a command's output files live while it runs: a directory of root's alone (made on
# first use), because qemu-ga makes every new file 0666 whatever the umask (seen on Debian 12's
# 7.2), and in /tmp any guest user could read or forge a command's output meanwhile.
EXEC_DIR = "/var/lib/tt-agent"
# Finished commands' output files stay in EXEC_DIR until this process has this many in a guest,
# then go in one `rm` in the background of the next command; files older than SWEEP_AGE_S go
# with them (left by a process that died: older than any command runs, past its timeout).
SWEEP_EVERY = 32
SWEEP_AGE_S = 3600
# An output file bigger than this is emptied once read, not left to the sweep (bytes).
KEEP_MAX = 64 * 1024
# The wrapper's last word: "tt:ended <status> <stdout not empty> <stderr not empty>".
ENDED = re.compile(r"^tt:ended (\d+) ([01]) ([01])$", re.M)
# A shell reports a death by signal N as status 128 + N (Linux's signals go up to 64).
SIGNALLED_MIN, SIGNALLED_MAX = 129, 128 + 64
# A directory listing bigger than this (bytes of `find` output, ~60 bytes an entry) fails.
LIST_OUTPUT_LIMIT = 16 * 1024 * 1024
# Paths longer than Linux's PATH_MAX are refused before asking the guest.
PATH_MAX = 4096

# $0: the output files' base name; $1 cwd or ""; $2 user or ""; $3 "1" when stdin is in
# "$0.in"; $4 the sweep's cutoff (see _Sweeper) or ""; $5 how many finished commands' base
# names (in EXEC_DIR) follow, to remove; then those; then how many NAME=VALUE env pairs follow;
# then the pairs; then the argv. The command runs in a subshell that `exec`s it (so a name like
# `echo` or `exit` is always the program, never a shell builtin); the wrapper waits for it, then
# says on qemu-ga's stdout (never the command's: its fds 1 and 2 are the files) how it ended and
# which of its files hold anything, so an empty stream costs no agent call. Env is exported
# last, so that a PATH of the user's cannot hide the tools the wrapper calls.
EXEC_WRAPPER = r"""
d=${0%/*} cwd=$1 user=$2 sweep=$4 n=$5
[ -d "$d" ] || mkdir -p -m 0700 -- "$d"
exec 3>>"$0.out" 4>>"$0.err"
if [ -n "$3" ]; then exec 0<"$0.in"; fi
shift 5
old=
while [ "$n" -gt 0 ]; do old="$old $1"; shift; n=$((n - 1)); done
n=$1
shift
if [ -n "$cwd" ]; then
  [ -d "$cwd" ] || { echo tt:cwd-missing; exit 125; }
  cd -- "$cwd" 2>/dev/null || { echo tt:cwd-denied; exit 125; }
fi
if [ -n "$user" ]; then
  /usr/bin/id -u -- "$user" >/dev/null 2>&1 || { echo tt:user-missing; exit 125; }
fi
if [ -n "$sweep$old" ]; then
  (cd -- "$d" || exit
   set --
   if [ -n "$sweep" ]; then
     for f in .tt-exec-*; do
       t=${f#.tt-exec-}; t=${t%%-*}
       case $t in ''|*[!0-9]*) continue;; esac
       [ "$t" -lt "$sweep" ] && set -- "$@" "$f"
     done
   fi
   for b in $old; do set -- "$@" "$b.out" "$b.err" "$b.in"; done
   [ $# -eq 0 ] || exec rm -f -- "$@") </dev/null >/dev/null 2>&1 3>&- 4>&- &
fi
while [ "$n" -gt 0 ]; do export "$1"; shift; n=$((n - 1)); done
if [ -n "$user" ]; then set -- /usr/sbin/runuser -u "$user" -- "$@"; fi
@RUN@
o=0 e=0
[ -s "$0.out" ] && o=1
[ -s "$0.err" ] && e=1
echo "tt:ended $s $o $e"
exit $s
"""

# How the wrapper runs the command under /bin/sh: in a subshell that `exec`s it.
RUN_SH = r"""(exec "$@") >&3 2>&4 3>&- 4>&-
s=$?"""
# ... and under busybox, whose sh runs its own applet for a name like `ls` or `true` (Debian
# builds it so) rather than the guest's program: the name is looked up in PATH here, as a
# shell does (an empty entry is the cwd; the first executable regular file), and the program
# run by its path, under the name it was given (exec -a: `ls` still says "ls: ..." in errors).
RUN_BUSYBOX = r"""name=$1 found=
case $1 in
*/*) found=$1;;
*) rest=$PATH:
   while [ -n "$rest" ]; do
     dir=${rest%%:*} rest=${rest#*:}
     if [ -f "${dir:-.}/$1" ] && [ -x "${dir:-.}/$1" ]; then found=${dir:-.}/$1; break; fi
   done;;
esac
if [ -n "$found" ]; then
  shift
  (exec -a "$name" "$found" "$@") >&3 2>&4 3>&- 4>&-
  s=$?
else
  echo "sh: $name: not found" >&4
  s=127
fi"""
SH_WRAPPER = EXEC_WRAPPER.replace("@RUN@", RUN_SH)
BUSYBOX_WRAPPER = EXEC_WRAPPER.replace("@RUN@", RUN_BUSYBOX)
# The wrapper's shell when the guest has it: a statically linked busybox (Debian's
# busybox-static, in our Debian image) starts with no dynamic loader and no relocations, ~10 ms
# under TCG against dash's 60-90 (see the module's note). Any other guest: /bin/sh.
BUSYBOX = "/bin/busybox"

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
        for delay in _poll_delays():
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            status = self.status(pid)
            if status["exited"]:
                return status
            if time.monotonic() >= deadline:
                return None
        raise AssertionError("unreachable")

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


class _Sweeper:
    """The output files of finished commands, left in EXEC_DIR (a `rm` per command would cost
    a program start, ~80 ms under TCG) and removed in batches: once this process has
    SWEEP_EVERY of them in a guest, its next command's wrapper removes them in the background,
    and with them any there older than SWEEP_AGE_S (of a process that died meanwhile)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._finished: dict[str, list[str]] = {}  # the guest's UUID: base names

    def add(self, guest: str, name: str) -> None:
        with self._lock:
            self._finished.setdefault(guest, []).append(name)

    def take(self, guest: str) -> tuple[str, list[str]]:
        """The wrapper's sweep cutoff (or "") and the names it is to remove (or none)."""
        with self._lock:
            if len(self._finished.get(guest, ())) < SWEEP_EVERY:
                return "", []
            names = self._finished.pop(guest)
        return str(int(time.time()) - SWEEP_AGE_S), names


SWEEPER = _Sweeper()


class _Shells:
    """Which shell runs a guest's wrapper: BUSYBOX when the guest has one whose `sh` answers,
    else /bin/sh; learned once per guest by this process (one short probe: a guest-exec of a
    missing program fails at once), and learned again when that shell cannot be started."""

    def __init__(self):
        self._lock = threading.Lock()
        self._known: dict[str, str] = {}  # the guest's UUID: the shell's path

    def of(self, agent: Agent, guest: str) -> str:
        with self._lock:
            known = self._known.get(guest)
        if known is None:
            known = _probe_shell(agent)
            with self._lock:
                self._known[guest] = known
        return known

    def forget(self, guest: str) -> None:
        with self._lock:
            self._known.pop(guest, None)


SHELLS = _Shells()


def _probe_shell(agent: Agent) -> str:
    """BUSYBOX if its sh runs in the guest, else /bin/sh (an older image, an operator's)."""
    try:
        pid = agent.spawn([BUSYBOX, "sh", "-c", "echo tt:sh"], capture=True)
    except GuestUnreachable:
        raise
    except EngineError:  # no such program (or not executable)
        return "/bin/sh"
    status = agent.wait(pid, PROBE_TIMEOUT_S)
    if status is None:
        agent.kill(pid)
        return "/bin/sh"
    return BUSYBOX if status.get("exitcode") == 0 and "tt:sh" in _text(status, "out-data") else "/bin/sh"


def _shell_argv(shell: str) -> list[str]:
    """The wrapper's argv up to its own arguments, under `shell` (a busybox's path or /bin/sh)."""
    return ["/bin/sh", "-c", SH_WRAPPER] if shell == "/bin/sh" else [shell, "sh", "-c", BUSYBOX_WRAPPER]


class _Output:
    """One stream of a command, read from its file: what is kept (up to the limit), and each
    piece handed to `on_output` as it comes. Its file is opened beforehand when it streams,
    else only once the command has ended, and only if the wrapper saw something in it."""

    def __init__(self, agent: Agent, name: str, path: str, limit: int, on_output: OutputSink | None):
        self.agent, self.name, self.path = agent, name, path
        self.limit, self.on_output = limit, on_output
        self.handle: int | None = None
        self.kept = bytearray()
        self.read = 0  # bytes read from the file
        self.truncated = False

    def pull(self) -> None:
        """Read what the process has written since the last pull."""
        while self.on_output is not None or len(self.kept) < self.limit:
            data, _eof = self.agent.read(self.handle, OUTPUT_CHUNK)
            self.read += len(data)
            if data:
                room = self.limit - len(self.kept)
                self.kept += data[:room]
                self.truncated |= len(data) > room
                if self.on_output is not None:
                    self.on_output(self.name, data)
            if len(data) < OUTPUT_CHUNK:
                return

    def collect(self, written: bool | None) -> None:
        """After the command: the rest of its output. `written` is what the wrapper saw (False:
        the file is empty; None: it did not say, killed)."""
        if self.handle is None:
            if written is False:
                return
            try:
                self.handle = self.agent.open(self.path, "r")
            except GuestPathMissing:  # killed before the wrapper made it
                return
        self.pull()
        if not self.truncated and len(self.kept) >= self.limit:  # anything past what was kept?
            data = self.agent.read(self.handle, 1)[0]
            self.read += len(data)
            self.truncated = bool(data)

    def release(self) -> None:
        """Close the file; empty it when it is big (its name stays until swept)."""
        if self.handle is not None:
            self.agent.close_quietly(self.handle)
            self.handle = None
        if self.read > KEEP_MAX or self.truncated:
            try:
                self.agent.close(self.agent.open(self.path, "w"))
            except EngineError as exc:
                log.warning("could not empty %s in the guest: %s", self.path, exc)


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
    guest = dom.UUIDString()
    name = f".tt-exec-{int(time.time())}-{_token()}"  # its time: what the sweep goes by
    base = f"{EXEC_DIR}/{name}"
    streams = [_Output(agent, "stdout", f"{base}.out", request.output_limit, on_output),
               _Output(agent, "stderr", f"{base}.err", request.output_limit, on_output)]
    inline = len(request.stdin) <= STDIN_INLINE_MAX
    pid = None
    try:
        if on_output is not None:  # read while it runs: opened before it starts
            for stream in streams:
                _in_exec_dir(agent, lambda s=stream: setattr(s, "handle", agent.open(s.path, "w+")))
        if not inline:
            _in_exec_dir(agent, lambda: _write_file(agent, f"{base}.in", [request.stdin]))
        cutoff, old = SWEEPER.take(guest)
        args = [base, request.cwd, request.user, "" if inline else "1", cutoff, str(len(old)), *old,
                str(len(request.env)), *(f"{k}={v}" for k, v in request.env), *request.argv]
        stdin = request.stdin if inline and request.stdin else None
        shell = SHELLS.of(agent, guest)
        try:
            pid = agent.spawn([*_shell_argv(shell), *args], stdin=stdin, capture=True)
        except GuestUnreachable:
            raise
        except EngineError:
            if shell == "/bin/sh":
                raise
            SHELLS.forget(guest)  # its busybox is gone (the guest changed): nothing ran, so again
            pid = agent.spawn([*_shell_argv(SHELLS.of(agent, guest)), *args], stdin=stdin, capture=True)
        status, timed_out = _follow(agent, pid, streams, started + request.timeout, guest)
        pid = None  # ended (or killed): nothing left to kill
        said, complained = _text(status, "out-data"), _text(status, "err-data")
        ended = ENDED.search(said)
        if not timed_out and not ended:
            _raise_refusal(said, complained, request)
        for stream, written in zip(streams, ended.group(2, 3) if ended else (None, None), strict=True):
            stream.collect(None if written is None else written == "1")
    finally:
        if pid is not None:  # we failed while it ran: it must not outlive the request
            try:
                agent.kill(pid)
            except EngineError as exc:
                log.warning("could not kill guest process %s: %s", pid, exc)
        for stream in streams:
            stream.release()
        SWEEPER.add(guest, name)
    exit_code, signal = None, status.get("signal")
    if ended and not timed_out:
        exit_code = int(ended.group(1))
        if SIGNALLED_MIN <= exit_code <= SIGNALLED_MAX:  # as a shell reports a signal's death
            exit_code, signal = None, exit_code - 128
    return ExecResult(
        exit_code=exit_code,
        stdout=bytes(streams[0].kept), stderr=bytes(streams[1].kept),
        stdout_truncated=streams[0].truncated, stderr_truncated=streams[1].truncated,
        duration_ms=round((time.monotonic() - started) * 1000), timed_out=timed_out,
        signal=signal,
    )


def _in_exec_dir(agent: Agent, make: Callable[[], Any]) -> None:
    """`make` a file in EXEC_DIR, making the directory first if the guest has none yet."""
    try:
        make()
    except GuestPathMissing:  # the guest's first command since it was made
        agent.run_script('mkdir -p -m 0700 -- "$0"', EXEC_DIR)
        make()


def _poll_delays(first: float = POLL_FIRST_S) -> Iterator[float]:
    """How long to wait before each poll of a running process (seconds): `first`, then a
    third of it, doubling up to POLL_MAX_S (never under POLL_FIRST_S)."""
    yield first
    delay = max(first / 3, POLL_FIRST_S)
    while True:
        yield min(delay, POLL_MAX_S)
        delay *= 2


class _Pace:
    """When to poll a guest's command first: 3/4 of the shortest time its latest PACE_WINDOW
    commands took to be seen ended (no command ends sooner than its guest can start the
    wrapper and a program: ~10 ms under KVM, ~130 ms under TCG), at most PACE_MAX_S, or
    POLL_FIRST_S with no history. A poll that comes too early costs the command time: qemu-ga
    answers it on the guest's CPU."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = {}  # the guest's UUID: seconds to "exited"

    def first(self, guest: str) -> float:
        with self._lock:
            seen = self._seen.get(guest)
            return min(max(POLL_FIRST_S, 0.75 * min(seen)), PACE_MAX_S) if seen else POLL_FIRST_S

    def ended(self, guest: str, seconds: float) -> None:
        with self._lock:
            self._seen.setdefault(guest, deque(maxlen=PACE_WINDOW)).append(seconds)


PACE = _Pace()


def _follow(agent: Agent, pid: int, streams: list[_Output], deadline: float, guest: str) -> tuple[dict, bool]:
    """Poll the process, pulling its output meanwhile, until it exits or the deadline passes
    (then it is killed): its last status and whether it timed out."""
    spawned = time.monotonic()
    for delay in _poll_delays(PACE.first(guest)):
        time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
        status = agent.status(pid)  # before the pulls: once it says exited, they read all
        if status["exited"]:
            PACE.ended(guest, time.monotonic() - spawned)
            return status, False
        for stream in streams:
            if stream.on_output is not None:  # else its output is read once it ends
                stream.pull()
        if time.monotonic() >= deadline:
            status = agent.kill(pid)
            if status is None:
                raise EngineError(f"the guest process {pid} ran past its timeout and could not be killed",
                                  code=ErrorCode.GUEST_EXEC)
            return status, True
    raise AssertionError("unreachable")


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
