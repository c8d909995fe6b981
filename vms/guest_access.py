"""Into a running guest: run a command in it, copy a file in or out, list a directory.

One service function per action, called by the API (vms/guest_api.py) and the portal
(vms/guest_views.py) alike. Each checks its input (InvalidInput naming the field and the
rule, before anything else: bad input is a 400 whatever the VM's state), then
vms.guest_target (who may, Env live, VM running, engine and template feature), then the
user's rate (TT_RATE_EXEC, TT_RATE_FILES), and only then asks the engine.

Each command and each file copied is recorded in the VM's operation history as a finished
operation (vm_exec, vm_file_put, vm_file_get): who, the command or path, the exit code or
byte count; never the output, the environment, stdin or a file's content. A refusal
records nothing; an engine failure is recorded as failed, with its code, and answered as
the refusal it stands for (a missing path 404, a denied one 403, no agent 422).

Input, decided once for every interface:
- `stdin` is text (sent as UTF-8), at most EXEC_STDIN_MAX characters: binary input goes in
  a file first. The output comes back as bytes; the API decodes it as UTF-8, replacing
  what is not.
- A file's size is declared before its bytes (the API's Content-Length, a form's file
  size): one past TT_FILE_MAX_MB is refused before anything reaches the guest.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.conf import settings

from audit import details
from audit.recording import audited
from engines.guest_io import (
    EXEC_TIMEOUT_DEFAULT,
    EXEC_TIMEOUT_MAX,
    ExecRequest,
    ExecResult,
    FileEntry,
    GuestFile,
    GuestPathDenied,
    GuestPathMissing,
    GuestUnreachable,
    OutputSink,
)
from engines.specs import Feature
from operations.models import Operation
from operations.recording import record
from ttportal import limits, ratelimit
from ttportal.errors import (
    ConflictingInput,
    EngineError,
    ErrorCode,
    Forbidden,
    InvalidInput,
    NotFound,
    TooLarge,
    TTError,
    Unsupported,
)
from vms.guest_target import GuestTarget, guest_target
from vms.kinds import VmKind
from vms.models import Vm

# How much of a command the operation history keeps: the first arguments, each cut short.
RECORDED_ARGS = 32
RECORDED_ARG_CHARS = 200
# The piece an upload is read in, and a download handed on in (by the engine).
CHUNK = 256 * 1024


# --- input ------------------------------------------------------------------------------


def _text(field: str, value, *, max_chars: int, empty_ok: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    if "\x00" in value:
        raise InvalidInput(field, "must not contain NUL")
    if not value and not empty_ok:
        raise InvalidInput(field, "must not be empty")
    if len(value) > max_chars:
        raise InvalidInput(field, f"must be at most {max_chars} characters")
    return value


def guest_path(value, field: str = "path") -> str:
    """An absolute path in the guest, or InvalidInput naming `field`."""
    if not limits.matches(limits.GUEST_PATH_PATTERN, value) or len(value) > limits.GUEST_PATH_MAX:
        raise InvalidInput(field, limits.GUEST_PATH_RULE)
    return value


def file_mode(value) -> int | None:
    """Permission bits: an int 0..0o7777, or octal text ("0644", "755"); None or "" for none."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if not limits.matches(limits.FILE_MODE_PATTERN, value):
            raise InvalidInput("mode", limits.FILE_MODE_RULE)
        return int(value, 8)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limits.FILE_MODE_MAX:
        raise InvalidInput("mode", limits.FILE_MODE_RULE)
    return value


def file_owner(value) -> str:
    if value is None or value == "":
        return ""
    if not limits.matches(limits.GUEST_OWNER_PATTERN, value):
        raise InvalidInput("owner", limits.GUEST_OWNER_RULE)
    return value


def exec_request(*, command, stdin="", env=None, cwd="", timeout=None, user="") -> ExecRequest:
    """The command to run, every field checked (InvalidInput naming the first at fault)."""
    if not isinstance(command, list | tuple) or not command:
        raise InvalidInput("command", "must be a non-empty list of strings (the program and its arguments)")
    if len(command) > limits.EXEC_ARGV_MAX:
        raise InvalidInput("command", f"must have at most {limits.EXEC_ARGV_MAX} items")
    argv = tuple(_text(f"command[{i}]", arg, max_chars=limits.EXEC_ARG_MAX) for i, arg in enumerate(command))
    if not argv[0].strip():
        # Well-formed, but names no program: a rule JSON Schema cannot state of one item.
        raise ConflictingInput("command[0]", "must name the program to run (not empty)")
    stdin = _text("stdin", "" if stdin is None else stdin, max_chars=limits.EXEC_STDIN_MAX)
    env = {} if env is None else env
    if not isinstance(env, dict):
        raise InvalidInput("env", "must be an object of variable names to values")
    if len(env) > limits.EXEC_ENV_MAX:
        raise InvalidInput("env", f"must have at most {limits.EXEC_ENV_MAX} variables")
    pairs = []
    for name, value in env.items():
        if not limits.matches(limits.EXEC_ENV_NAME_PATTERN, name):
            # ConflictingInput: the API's schema (OpenAPI 3.0) cannot state a rule on names.
            raise ConflictingInput("env", f"{name!r}: {limits.EXEC_ENV_NAME_RULE}")
        pairs.append((name, _text(f"env.{name}", value, max_chars=limits.EXEC_ENV_VALUE_MAX)))
    cwd = guest_path(cwd, "cwd") if cwd else ""
    if timeout is None:
        timeout = EXEC_TIMEOUT_DEFAULT
    if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
            or not limits.EXEC_TIMEOUT_MIN <= timeout <= EXEC_TIMEOUT_MAX):
        raise InvalidInput("timeout", f"must be a number of seconds between {limits.EXEC_TIMEOUT_MIN} and "
                                      f"{EXEC_TIMEOUT_MAX:g}")
    if user and not limits.matches(limits.GUEST_USER_PATTERN, user):
        raise InvalidInput("user", limits.GUEST_USER_RULE)
    return ExecRequest(argv=argv, stdin=stdin.encode(), env=tuple(pairs), cwd=cwd, timeout=float(timeout),
                       user=user or "")


# --- what an engine failure means to the caller ------------------------------------------


class DeniedInGuest(Forbidden):
    """The guest itself refused the path (its file permissions): a 403 like any refusal of
    who may, but the portal says it on the VM page instead of its 403 page."""


def as_refusal(exc: TTError) -> TTError:
    """The refusal an engine's failure stands for: a path missing in the guest is a 404,
    denied a 403, a guest with nothing answering (or an engine lacking the call) a 422;
    anything else stays the engine's error (502)."""
    if isinstance(exc, GuestPathMissing):
        return NotFound(f"in the guest: {exc.message}")
    if isinstance(exc, GuestPathDenied):
        return DeniedInGuest(f"the guest refused it: {exc.message}")
    if isinstance(exc, GuestUnreachable) or exc.code == ErrorCode.UNSUPPORTED:
        return Unsupported(exc.message)
    return exc


def _failure(exc: Exception, code: ErrorCode) -> TTError:
    """What the history records of `exc`: a TTError as it is, anything else under `code`."""
    return exc if isinstance(exc, TTError) else EngineError(f"{type(exc).__name__}: {exc}", code=code)


def _record(kind: str, target: GuestTarget, by, params: dict, error: TTError | None = None) -> Operation:
    status = Operation.Status.FAILED if error else Operation.Status.SUCCEEDED
    return record(kind, env=target.vm.env, vm=target.vm, by=by, run=False, status=status, params=params,
                  error=error)


# --- exec --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedExec:
    """A command that passed every check and holds one of its user's slots (`slot`): what
    `run_exec` runs, in the request's thread or another (the API's ?stream=1)."""

    target: GuestTarget
    request: ExecRequest
    by: object
    slot: str


@audited("vm.exec", detail=details.exec_command, atomic=False)
def prepare_exec(vm: Vm, *, by, command, stdin="", env=None, cwd="", timeout=None, user="") -> PreparedExec:
    """Every check of `vm_exec`, and the user's slot taken: the refusals, before anything runs."""
    request = exec_request(command=command, stdin=stdin, env=env, cwd=cwd, timeout=timeout, user=user)
    target = guest_target(vm, Feature.EXEC, by=by)
    ratelimit.take("exec", user=by)
    slot = ratelimit.claim_slot("concurrent_execs", user=by, most=settings.TT_MAX_EXECS_PER_USER,
                                seconds=int(EXEC_TIMEOUT_MAX) + 60, what="commands")
    return PreparedExec(target=target, request=request, by=by, slot=slot)


def run_exec(prepared: PreparedExec, on_output: OutputSink | None = None) -> ExecResult:
    """Run a prepared command, record it, give its slot back."""
    target, request = prepared.target, prepared.request
    started = time.monotonic()
    params = {"command": [arg[:RECORDED_ARG_CHARS] for arg in request.argv[:RECORDED_ARGS]],
              "args": len(request.argv)}
    if request.user:
        params["user"] = request.user
    try:
        result = target.engine.exec(target.spec, request, on_output)
    except Exception as exc:
        error = _failure(exc, ErrorCode.GUEST_EXEC)
        params["duration_ms"] = round((time.monotonic() - started) * 1000)
        _record(VmKind.VM_EXEC, target, prepared.by, params, error)
        if isinstance(exc, TTError):
            raise as_refusal(exc) from exc
        raise
    finally:
        ratelimit.release_slot(prepared.slot)
    params.update(exit_code=result.exit_code, timed_out=result.timed_out, duration_ms=result.duration_ms)
    if result.signal is not None:
        params["signal"] = result.signal
    _record(VmKind.VM_EXEC, target, prepared.by, params)
    return result


def vm_exec(vm: Vm, *, by, command, stdin="", env=None, cwd="", timeout=None, user="",
            on_output: OutputSink | None = None) -> ExecResult:
    """Run `command` (an argv: no shell unless it names one) in the running guest and wait
    for it, at most `timeout` seconds (then it is killed: `timed_out`). Its output goes to
    `on_output` as it comes, when given; the result keeps up to engines.guest_io.OUTPUT_LIMIT
    bytes of stdout and of stderr each."""
    prepared = prepare_exec(vm, by=by, command=command, stdin=stdin, env=env, cwd=cwd, timeout=timeout,
                            user=user)
    return run_exec(prepared, on_output)


# --- files -------------------------------------------------------------------------------


def check_size(size, field: str = "body") -> int:
    """A declared upload size, within TT_FILE_MAX_MB (413 past it, naming `field`)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInput(field, "must declare its size in bytes (a Content-Length)")
    most = limits.file_max_bytes()
    if size > most:
        raise TooLarge(f"is {size} bytes, more than the {settings.TT_FILE_MAX_MB} MiB a file copied to a "
                       f"guest may hold (TT_FILE_MAX_MB)", field=field, limit=most)
    return size


def _counted(chunks: Iterable[bytes], size: int, counter: list[int]) -> Iterator[bytes]:
    """`chunks` as they come, counted; more than `size` bytes is refused mid-way (the body
    was declared smaller), so the engine never writes past the limit."""
    for chunk in chunks:
        if not chunk:
            continue
        counter[0] += len(chunk)
        if counter[0] > size:
            raise InvalidInput("body", f"holds more than the {size} bytes its Content-Length declared")
        yield chunk


@audited("vm.file_put", detail=details.guest_path, atomic=False)
def vm_file_put(vm: Vm, *, by, path: str, chunks: Iterable[bytes], size: int, mode=None, owner="") -> int:
    """Write the file at `path` in the running guest from `chunks` (read one at a time, never
    held whole), `size` bytes as declared beforehand; `mode` (permission bits, an int or
    octal text) and `owner` ("user" or "user:group") when given. Returns the bytes written."""
    path = guest_path(path)
    mode = file_mode(mode)
    owner = file_owner(owner)
    size = check_size(size)
    target = guest_target(vm, Feature.FILES, by=by)
    ratelimit.take("files", user=by)
    counter = [0]
    params = {"path": path, "direction": "put", "size": size}
    try:
        written = target.engine.file_put(target.spec, path, _counted(chunks, size, counter), mode=mode,
                                         owner=owner)
        if counter[0] != size:
            raise EngineError(f"the upload ended after {counter[0]} of its {size} bytes",
                              code=ErrorCode.GUEST_FILES)
    except Exception as exc:
        _record(VmKind.VM_FILE_PUT, target, by, {**params, "bytes": counter[0]},
                _failure(exc, ErrorCode.GUEST_FILES))
        if isinstance(exc, TTError):
            raise as_refusal(exc) from exc
        raise
    if mode is not None:
        params["mode"] = f"{mode:04o}"
    if owner:
        params["owner"] = owner
    _record(VmKind.VM_FILE_PUT, target, by, {**params, "bytes": written})
    return written


@audited("vm.file_get", detail=details.guest_path, atomic=False)
def vm_file_get(vm: Vm, *, by, path: str) -> GuestFile:
    """The file at `path` in the running guest, to be read in chunks and closed (a
    GuestFile: `with` it). A missing, unreadable or directory path is refused before any
    chunk. Recorded once read to its end or closed, with the bytes handed out."""
    path = guest_path(path)
    target = guest_target(vm, Feature.FILES, by=by)
    ratelimit.take("files", user=by)
    params = {"path": path, "direction": "get"}
    try:
        opened = target.engine.file_get(target.spec, path)
    except Exception as exc:
        _record(VmKind.VM_FILE_GET, target, by, {**params, "bytes": 0}, _failure(exc, ErrorCode.GUEST_FILES))
        if isinstance(exc, TTError):
            raise as_refusal(exc) from exc
        raise
    if opened.size is not None and opened.size > limits.file_max_bytes():
        opened.close()
        error = TooLarge(f"is {opened.size} bytes, more than the {settings.TT_FILE_MAX_MB} MiB a file copied "
                         f"from a guest may hold (TT_FILE_MAX_MB)", field="path",
                         limit=limits.file_max_bytes())
        _record(VmKind.VM_FILE_GET, target, by, {**params, "bytes": 0, "size": opened.size}, error)
        raise error
    return _recorded_download(opened, target, by, params)


def _recorded_download(opened: GuestFile, target: GuestTarget, by, params: dict) -> GuestFile:
    state = {"bytes": 0, "complete": False, "error": None, "recorded": False}
    most = limits.file_max_bytes()

    def chunks() -> Iterator[bytes]:
        try:
            for chunk in opened:
                state["bytes"] += len(chunk)
                if state["bytes"] > most:  # a size the engine could not tell beforehand
                    raise EngineError(f"the file holds more than TT_FILE_MAX_MB ({settings.TT_FILE_MAX_MB} "
                                      f"MiB): the download was cut there", code=ErrorCode.GUEST_FILES)
                yield chunk
            state["complete"] = True
        except Exception as exc:
            state["error"] = _failure(exc, ErrorCode.GUEST_FILES)
            raise

    def close() -> None:
        if state["recorded"]:
            return
        state["recorded"] = True
        try:
            opened.close()
        finally:
            _record(VmKind.VM_FILE_GET, target, by,
                    {**params, "bytes": state["bytes"], "size": opened.size, "complete": state["complete"]},
                    state["error"])

    return GuestFile(chunks=chunks(), size=opened.size, close=close)


def vm_file_list(vm: Vm, *, by, path: str) -> list[FileEntry]:
    """The entries of the directory at `path` in the running guest (not recorded: it reads
    names, not content; rate-limited with the copies)."""
    path = guest_path(path)
    target = guest_target(vm, Feature.FILES, by=by)
    ratelimit.take("files", user=by)
    try:
        return target.engine.file_list(target.spec, path)
    except TTError as exc:
        raise as_refusal(exc) from exc


def read_chunks(stream, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """A request body's `size` bytes, `chunk` at a time, as they arrive."""
    left = size
    while left > 0:
        data = stream.read(min(chunk, left))
        if not data:
            return
        left -= len(data)
        yield data

