"""A command run in a container of a local podman by `runc exec`, without podman's API or conmon.

Why: of an exec of `true` through podman's exec API (about 160 ms here, 2 CPUs under load),
podman's own work (the exec session, conmon, its attach socket, the exit file) is most; `runc
exec` alone takes about 55 ms. On a node whose podman runs on this host (a unix socket), as
root, with runc as the container's OCI runtime, we run runc ourselves against the container's
runtime state (`<runtime root>/<container id>/state.json`, the root runc's default /run/runc
for rootful podman, which passes runc no --root). Anything else keeps the API path
(guest_exec.run_exec): the engine chooses (engine.DockerEngine.exec, TT_DOCKER_EXEC).

Confinement, as `podman exec` gives it (podman 4.3's libpod/oci_conmon_exec_common.go,
prepareProcessExec, and oci_conmon_exec_linux.go, setProcessCapabilitiesExec; runc 1.1's
exec.go and libcontainer): podman hands runc a process.json (`runc exec --process`), and so
do we, built the same way (exec_process below) from the container's own config.json process:
- from the container, unchanged: rlimits, no_new_privs, AppArmor profile, OOM score, umask,
  the image's env (PATH, HOME, TERM, container=podman, HOSTNAME), the SELinux label
  (inspect's ProcessLabel, as podman sets it);
- capabilities: the bounding set is the container's; inheritable emptied; uid 0 gets the
  bounding set as effective and permitted; the container's own user keeps its effective set
  (also as inheritable, permitted and ambient); another user keeps the spec's sets (podman
  leaves them so too);
- user: as podman's lookup (runc's user.GetExecUser): a name or uid, an optional group, from
  the container's /etc/passwd and /etc/group; the groups listing the user become its
  supplementary groups; no user: the container's own process user;
- env: ours appended to the container's (the later wins, as runc sets them one by one);
  HOME from passwd only when the container's env has none;
- what runc itself takes from the container's state and not from any process.json:
  namespaces (it joins those of the container's first process), cgroups (it joins the
  container's), the seccomp filter, masked and read-only paths, the root filesystem.
What is not podman's: a user given by name or number keeps the container's umask (podman
drops it from the process and runc leaves the umask conmon had, 0022 too here); what no spec
sets is inherited from our process rather than from conmon (its nice value, rlimits the
container does not set; runc's own environment is bare, RUNC_ENV).
The integration test compares /proc/self/status (capabilities, Seccomp, NoNewPrivs),
/proc/self/cgroup, namespaces and rlimits of a command run both ways.

Streams: `runc exec --detach` passes our pipes to the process as its stdin, stdout and
stderr (no tty), so they stream as printed. A small waiter (WAITER below, conmon's part)
reaps the process and exits with its code (128+N for a signal), as podman's exec reports it;
the command ends when its process does, as with podman. runc's own failures (no such
command, a bad cwd) are read from its JSON log and turned into podman's codes: 127 not
found, 126 not permitted, 125 otherwise, with runc's message on stderr. The process runc
starts is a session leader whose PID runc writes to --pid-file: a timeout or a caller who
gives up kills that session the way the API path does (guest_exec.kill_session, checked to
be in the container's PID namespace).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import errno
import fcntl
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from engines.docker.guest_exec import (
    KILL_GRACE_S,
    READ_SIZE,
    ContainerNotRunning,
    OutputKept,
    _namespace,
    kill_session,
)
from engines.errors import EngineError, ErrorCode
from engines.guest_io import ExecRequest, ExecResult, OutputSink

# podman's exit codes for an exec runc could not start (libpod/define/exec_codes.go).
CODE_GENERIC, CODE_CANNOT_INVOKE, CODE_NOT_FOUND = 125, 126, 127
RUNC_DEFAULT_ROOT = "/run/runc"  # runc's --root for euid 0, what rootful podman leaves it
ACCOUNTS_LIMIT = 4 * 1024 * 1024
MAX_ID = 2**31 - 1  # runc's largest uid and gid
# runc's own environment: none of ours (the site's settings and secrets). runc's init enters
# the container with it before it execs the command with the process.json's env; conmon too
# gives runc a bare one.
RUNC_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

# The waiter, as conmon is podman's: a child subreaper (prctl PR_SET_CHILD_SUBREAPER) that
# runs `runc exec --detach` and, runc gone, waits for the process runc started (now its
# child) and exits with its status (128+N for a signal), so the command ends when that
# process does, whatever it left running in the background. Foreground `runc exec` would
# not do: it relays the output through pipes of its own and waits until every holder of
# them (a `server &` the command started) has closed them. Perl: perl-base is essential on
# Debian, and it starts in about a millisecond (Python takes 20 to 50 ms here).
WAITER = r"""
my ($prctl, $pid_file, @runc) = @ARGV;
syscall($prctl, 36, 1, 0, 0, 0) == 0 or die "tt exec waiter: prctl: $!\n";
sub code { my $s = shift; return ($s & 127) ? 128 + ($s & 127) : ($s >> 8); }
my $runc = fork() // die "tt exec waiter: fork: $!\n";
if ($runc == 0) { exec { $runc[0] } @runc; exit 127; }
waitpid($runc, 0) == $runc or exit 125;
exit code($?) if $?;
open(my $f, "<", $pid_file) or exit 125;
my $leader = <$f> + 0;
while ((my $done = waitpid(-1, 0)) > 0) { exit code($?) if $done == $leader; }
exit 125;
"""
PRCTL_SYSCALL = {"x86_64": 157, "aarch64": 167}  # prctl's number, per machine

ReadGuestFile = Callable[[str], "bytes | None"]  # a file of the container, None if missing


class NotApplicable(Exception):
    """runc cannot run this container's command here: why, for the log and the fallback."""


@dataclass(frozen=True)
class RuncTarget:
    """What `runc exec` needs of one running container, from podman's own inspect."""

    container_id: str
    runtime: str  # the runc binary podman uses
    root: str  # runc's state root
    init_pid: int  # the container's first process (its PID namespace is the victims')
    process: dict  # config.json's "process"
    config_user: str = ""  # the container's configured user ("": the spec's)
    process_label: str = ""
    waiter: str = "/usr/bin/perl"  # runs WAITER
    machine: str = "x86_64"


# --- which containers --------------------------------------------------------------------


def runc_target(inspect: dict, runtime_path: str, *, root: str = RUNC_DEFAULT_ROOT) -> RuncTarget:
    """The target for a container, from podman's libpod inspect (`OCIRuntime`,
    `OCIConfigPath`, `State`); NotApplicable says why not. ContainerNotRunning when it
    does not run (the same error as the API path)."""
    state = inspect.get("State") or {}
    name = inspect.get("Name") or inspect.get("Id", "")
    if not state.get("Running") or state.get("Paused"):
        raise ContainerNotRunning(f"container {name} is not running")
    runtime = inspect.get("OCIRuntime") or ""
    if runtime != "runc" or os.path.basename(runtime_path) != "runc":
        raise NotApplicable(f"its OCI runtime is {runtime or 'unknown'} ({runtime_path or '?'}), not runc")
    if os.geteuid() != 0:
        raise NotApplicable("this process is not root (runc exec needs root)")
    container_id = inspect.get("Id") or ""
    if not os.path.isfile(os.path.join(root, container_id, "state.json")):
        raise NotApplicable(f"runc has no state for it under {root} (a rootless podman, or another root)")
    config_path = inspect.get("OCIConfigPath") or ""
    try:
        with open(config_path, "rb") as f:
            process = json.load(f)["process"]
    except (OSError, ValueError, KeyError) as exc:
        raise NotApplicable(f"its OCI config {config_path!r} cannot be read: {exc}") from None
    if (inspect.get("HostConfig") or {}).get("GroupAdd"):
        raise NotApplicable("it has added groups (--group-add), which podman resolves itself")
    waiter, machine = shutil.which("perl") or "", os.uname().machine
    if not waiter or machine not in PRCTL_SYSCALL:
        raise NotApplicable(f"no perl on this host or an unknown machine ({machine}) for the exec waiter")
    config = inspect.get("Config") or {}
    process["env"] = creation_env(process.get("env") or [], config.get("Hostname") or "")
    return RuncTarget(
        container_id=container_id, runtime=runtime_path, root=root, init_pid=int(state.get("Pid") or 0),
        process=process, config_user=config.get("User") or "",
        process_label=inspect.get("ProcessLabel") or "", waiter=waiter, machine=machine,
    )


def creation_env(env: list[str], hostname: str) -> list[str]:
    """The container's env as podman's exec starts from (its spec as created): config.json's
    less what podman appended at the start when the spec had none, HOME (the container
    user's) and then HOSTNAME. (An image whose env ends with its own HOME loses it here, and
    gets the user's home from passwd instead.)"""
    env = list(env)
    if env and env[-1] == f"HOSTNAME={hostname}":
        env.pop()
    if env and env[-1].startswith("HOME="):
        env.pop()
    return env


# --- the process -------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecUser:
    uid: int
    gid: int
    home: str = ""
    sgids: tuple[int, ...] = ()


def exec_user(spec: str, passwd: bytes | None, group: bytes | None) -> ExecUser:
    """runc's user.GetExecUser (what podman's lookup calls), defaults uid 0, gid 0: `spec`
    "user[:group]", names or numbers, against the container's /etc/passwd and /etc/group
    (None: the file is missing). EngineError on field `user` for a name it does not hold."""
    user_arg, _, group_arg = spec.partition(":")
    uid, gid, home, sgids = 0, 0, "", ()
    users = _rows(passwd, 7)
    if user_arg == "":
        matched = next((u for u in users if _int(u[2]) == 0), None)
    elif user_arg.isdigit():
        matched = next((u for u in users if _int(u[2]) == int(user_arg)), None)
    else:
        matched = next((u for u in users if u[0] == user_arg), None)
    if matched is not None:
        uid, gid, home = _int(matched[2]), _int(matched[3]), matched[5]
    elif user_arg:
        if not user_arg.isdigit():
            raise EngineError(f"no user {user_arg!r} in the container: unable to find user {user_arg}: "
                              "no matching entries in passwd file", code=ErrorCode.INVALID, field="user")
        uid = int(user_arg)
    if group_arg or matched is not None:
        groups = _rows(group, 4)
        if group_arg:
            found = next((g for g in groups if (_int(g[2]) == int(group_arg) if group_arg.isdigit()
                                                else g[0] == group_arg)), None)
            if found is not None:
                gid = _int(found[2])
            elif group_arg.isdigit():
                gid = int(group_arg)
            else:
                raise EngineError(f"no group {group_arg!r} in the container: unable to find group "
                                  f"{group_arg}: no matching entries in group file",
                                  code=ErrorCode.INVALID, field="user")
        else:
            sgids = tuple(_int(g[2]) for g in groups if matched[0] in g[3].split(","))
    if uid > MAX_ID or gid > MAX_ID:
        raise EngineError(f"user {spec!r}: ids run from 0 to {MAX_ID}", code=ErrorCode.INVALID, field="user")
    return ExecUser(uid=uid, gid=gid, home=home, sgids=sgids)


def _rows(text: bytes | None, width: int) -> list[list[str]]:
    rows = []
    for line in (text or b"").decode(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        rows.append((fields + [""] * width)[:width])
    return rows


def _int(text: str) -> int:
    return int(text) if text.strip().isdigit() else 0


def exec_process(target: RuncTarget, request: ExecRequest, read: ReadGuestFile) -> dict:
    """The process.json podman would give runc for `request` (see the module's doc)."""
    process = copy.deepcopy(target.process)
    process["selinuxLabel"] = target.process_label
    process["args"] = list(request.argv)
    process["terminal"] = False
    process.pop("consoleSize", None)
    process["env"] = list(process.get("env") or []) + [f"{name}={value}" for name, value in request.env]
    if request.cwd:
        process["cwd"] = request.cwd
    user = request.user or target.config_user
    # Looked up as podman does: the user's entry, and HOME when the image's env has none.
    needs_files = bool(user) or not any(entry.startswith("HOME=") for entry in process["env"])
    passwd = read("/etc/passwd") if needs_files else None
    group = read("/etc/group") if needs_files else None
    found = exec_user(user, passwd, group) if needs_files else _spec_user(process)
    if user:
        process["user"] = {**{k: v for k, v in (process.get("user") or {}).items() if k == "umask"},
                           "uid": found.uid, "gid": found.gid}
        if found.sgids:
            process["user"]["additionalGids"] = list(found.sgids)
    caps = process.setdefault("capabilities", {})
    bounding = list(caps.get("bounding") or [])
    effective = list(target.process.get("capabilities", {}).get("effective") or [])
    caps["bounding"] = bounding
    caps["inheritable"] = []
    if found.uid == 0:
        caps["effective"], caps["permitted"] = list(bounding), list(bounding)
    elif user == target.config_user:
        for name in ("effective", "inheritable", "permitted", "ambient"):
            caps[name] = list(effective)
    if not any(entry.startswith("HOME=") for entry in process["env"]):
        process["env"].append(f"HOME={found.home}")
    return process


def _spec_user(process: dict) -> ExecUser:
    user = process.get("user") or {}
    return ExecUser(uid=int(user.get("uid") or 0), gid=int(user.get("gid") or 0))


# --- the container's /etc/passwd and /etc/group ----------------------------------------

_OPENAT2 = 437  # the syscall's number, the same on every architecture
_RESOLVE_NO_MAGICLINKS, _RESOLVE_IN_ROOT = 0x02, 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def read_in_container(init_pid: int, path: str, limit: int = ACCOUNTS_LIMIT) -> bytes | None:
    """A regular file of the container, read from the host through its first process's root
    (/proc/PID/root: the container's mounts, binds included) with openat2(RESOLVE_IN_ROOT),
    so a symbolic link in the container resolves inside it, never to the host's files.
    None when it has no such file; OSError where the kernel has no openat2 (Linux < 5.6)."""
    libc = ctypes.CDLL(None, use_errno=True)
    root = os.open(f"/proc/{init_pid}/root", os.O_PATH | os.O_DIRECTORY)
    try:
        how = _OpenHow(flags=os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, mode=0,
                       resolve=_RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
        fd = libc.syscall(_OPENAT2, root, path.encode(), ctypes.byref(how), ctypes.sizeof(how))
        if fd < 0:
            code = ctypes.get_errno()
            if code in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise OSError(code, os.strerror(code), path)
    finally:
        os.close(root)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # a FIFO would block us
            raise OSError(errno.EINVAL, "not a regular file", path)
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
    return data


# --- running it ---------------------------------------------------------------------------


def run_runc_exec(target: RuncTarget, request: ExecRequest, read: ReadGuestFile,
                  on_output: OutputSink | None = None) -> ExecResult:
    """Run `request` in the container with `runc exec` and wait for it, or kill it at its
    timeout; a caller whose sink raises has the command killed too."""
    started = time.monotonic()
    deadline = started + request.timeout
    process = exec_process(target, request, read)
    kept = OutputKept(request.output_limit)

    def take(stream: str, data: bytes) -> None:
        kept.add(stream, data)
        if on_output is not None:
            on_output(stream, data)

    with tempfile.TemporaryDirectory(prefix="tt-runc-exec-") as work:
        spec_path, pid_path, log_path = (os.path.join(work, n) for n in ("process.json", "pid", "log.json"))
        with open(spec_path, "w") as f:
            json.dump(process, f)
        runc = [target.runtime, "--root", target.root, "--log", log_path, "--log-format", "json",
                "exec", "--detach", "--process", spec_path, "--pid-file", pid_path, target.container_id]
        child = subprocess.Popen(
            [target.waiter, "-e", WAITER, str(PRCTL_SYSCALL[target.machine]), pid_path, *runc],
            stdin=subprocess.PIPE if request.stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True, env=RUNC_ENV,
        )
        try:
            try:
                ended = _pump(child, request.stdin, deadline, take)
            except BaseException:  # the caller gave up (its sink raised: a client went away)
                _kill(target, child, pid_path)
                raise
            if not ended:
                _kill(target, child, pid_path)
                _pump(child, b"", time.monotonic() + KILL_GRACE_S, take)
        finally:
            for pipe in (child.stdin, child.stdout, child.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            try:
                code = child.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
        failure = _runc_failure(log_path) if code != 0 else ""
    duration_ms = int((time.monotonic() - started) * 1000)
    if not ended:
        return _result(kept, None, duration_ms, timed_out=True)
    if failure:  # runc said why on stderr too: the user reads it there
        code = _failure_code(failure, target)
    return _result(kept, code, duration_ms, timed_out=False)


def _result(kept: OutputKept, code: int | None, duration_ms: int, *, timed_out: bool) -> ExecResult:
    return ExecResult(
        exit_code=code, stdout=bytes(kept.kept["stdout"]), stderr=bytes(kept.kept["stderr"]),
        stdout_truncated=kept.truncated["stdout"], stderr_truncated=kept.truncated["stderr"],
        duration_ms=duration_ms, timed_out=timed_out, signal=int(signal.SIGKILL) if timed_out else None,
    )


def _pump(child: subprocess.Popen, stdin: bytes, deadline: float, take) -> bool:
    """Write `stdin` (then close it) and hand stdout/stderr to `take` as they come, until
    the command ends (True) or `deadline` passes (False). The command ends when runc exits
    (it waits for the process it started), then what the pipes hold is read, as conmon
    does: a child the command left running in the background may keep the pipes open, and
    is not waited for (podman's exec API does not wait for it either)."""
    streams = {}
    for pipe, name in ((child.stdout, "stdout"), (child.stderr, "stderr")):
        if pipe is not None and not pipe.closed:
            _non_blocking(pipe.fileno())
            streams[pipe.fileno()] = name
    to_send = memoryview(stdin)
    writer = child.stdin if stdin and child.stdin is not None and not child.stdin.closed else None
    poller = select.poll()  # not select(): a busy worker may hold file descriptors past 1024
    for fd in streams:
        poller.register(fd, select.POLLIN)
    if writer is not None:
        _non_blocking(writer.fileno())
        poller.register(writer.fileno(), select.POLLOUT)
    if child.returncode is not None:  # reaped already (after a kill): its PID may be another's
        _drain(streams, take)
        return True
    runc_exit = os.pidfd_open(child.pid)  # readable once the waiter exits (a zombie still counts)
    poller.register(runc_exit, select.POLLIN)
    try:
        while streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for fd, _ in poller.poll(remaining * 1000):
                if fd == runc_exit:
                    _drain(streams, take)
                    return True
                if writer is not None and fd == writer.fileno():
                    sent = _send(fd, to_send)
                    to_send = to_send[sent:] if sent is not None else to_send[:0]
                    if not to_send:
                        poller.unregister(fd)
                        writer.close()
                        writer = None
                    continue
                if fd in streams and not _read(fd, streams, take):
                    poller.unregister(fd)
        return True
    finally:
        os.close(runc_exit)


def _send(fd: int, data: memoryview) -> int | None:
    """One write of stdin: the bytes written, None when the command will read no more (it
    ended, or closed its stdin unread)."""
    try:
        return os.write(fd, data[:READ_SIZE])
    except BlockingIOError:
        return 0
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise
        return None


def _read(fd: int, streams: dict[int, str], take) -> bool:
    """One read of an output pipe handed to `take`; False (and the stream dropped) at its end."""
    try:
        data = os.read(fd, READ_SIZE)
    except BlockingIOError:
        return True
    if not data:
        del streams[fd]
        return False
    take(streams[fd], data)
    return True


def _drain(streams: dict[int, str], take) -> None:
    """What the pipes hold now, without waiting for more (nor for their end)."""
    for fd in list(streams):
        with contextlib.suppress(BlockingIOError):
            while fd in streams:
                data = os.read(fd, READ_SIZE)
                if not data:
                    del streams[fd]
                    break
                take(streams[fd], data)


def _non_blocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


def _kill(target: RuncTarget, child: subprocess.Popen, pid_path: str) -> None:
    """SIGKILL the command's session (as the API path does), found by the PID runc wrote or,
    before it wrote one, as runc's children in the container's PID namespace."""
    namespace = _namespace(target.init_pid, "/proc") if target.init_pid > 0 else None
    if namespace is None:
        child.kill()
        return
    for _ in range(2):
        for leader in _leaders(child.pid, pid_path):
            kill_session(leader, namespace)
        if child.poll() is not None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=0.2)
            return
    child.kill()  # runc never started the command: nothing in the container to kill


def _leaders(runc_pid: int, pid_path: str) -> set[int]:
    leaders = set()
    with contextlib.suppress(OSError, ValueError), open(pid_path) as f:
        leaders.add(int(f.read().strip()))
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = f"/proc/{entry.name}/stat"
        with contextlib.suppress(OSError, IndexError, ValueError), open(stat, "rb") as f:
            if int(f.read().rsplit(b")", 1)[1].split()[1]) == runc_pid:
                leaders.add(int(entry.name))
    return leaders


def _runc_failure(log_path: str) -> str:
    """runc's own error (its JSON log, level error), "" when it logged none: then the exit
    code was the command's."""
    messages = []
    with contextlib.suppress(OSError), open(log_path, "rb") as f:
        for line in f.read(256 * 1024).splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal"):
                    messages.append(str(entry.get("msg", "")))
    return "; ".join(m for m in messages if m)


def _failure_code(message: str, target: RuncTarget) -> int:
    lowered = message.lower()
    if "stopped container" in lowered or "paused container" in lowered or "does not exist" in lowered:
        raise ContainerNotRunning(f"container {target.container_id[:12]} is not running: {message}")
    if "permission denied" in lowered or "operation not permitted" in lowered:
        return CODE_CANNOT_INVOKE
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        return CODE_NOT_FOUND
    return CODE_GENERIC
