"""Getting into a running guest: a command run in it, files copied in and out, its console.

The types every driver speaks (engines/base.py declares the calls, each behind a Feature):
QEMU answers them through the guest agent and libvirt's console stream, Docker through
podman's exec and archive APIs. Plain Python, like the rest of engines/: no Django.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from engines.errors import EngineError, ErrorCode

# What one stream of a command's output keeps (stdout and stderr each): past it, the rest is
# read and dropped, and the result says `truncated`.
OUTPUT_LIMIT = 1024 * 1024
# How long a command may run (seconds): the request's `timeout` defaults to the first and
# may not pass the second.
EXEC_TIMEOUT_DEFAULT = 30.0
EXEC_TIMEOUT_MAX = 600.0

# Called with ("stdout" | "stderr", bytes) as a command's output arrives, from the thread
# running it: how a client follows a long command (the API's ?stream=1).
OutputSink = Callable[[str, bytes], None]


@dataclass(frozen=True)
class ExecRequest:
    """A command to run in the guest: an argv, no shell unless argv names one."""

    argv: tuple[str, ...]
    stdin: bytes = b""
    env: tuple[tuple[str, str], ...] = ()  # (name, value) pairs added to the guest's environment
    cwd: str = ""  # "" : the engine's default (the guest agent's, the image's WORKDIR)
    timeout: float = EXEC_TIMEOUT_DEFAULT  # seconds; past it the process is killed
    user: str = ""  # "" : the engine's default (root); only engines that can switch users take it
    output_limit: int = OUTPUT_LIMIT  # bytes kept of stdout and of stderr, each

    def replace(self, **changes) -> ExecRequest:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ExecResult:
    """How a command ended. `exit_code` is None when it did not exit by itself (killed at
    its timeout, or by a signal: then `signal` names it when the engine can tell)."""

    exit_code: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: int = 0
    timed_out: bool = False
    signal: int | None = None


@dataclass(frozen=True)
class FileEntry:
    """One entry of a directory listed in the guest."""

    name: str
    kind: str  # "file" | "dir" | "link" | "other"
    size: int = 0
    mode: int = 0  # permission bits (0o644), 0 when unknown
    mtime: float | None = None  # seconds since the epoch, None when unknown


@dataclass
class GuestFile:
    """A file being read out of the guest: its chunks, read as they are iterated (never the
    whole file in memory), and `close` to let go of whatever the engine holds open.
    `size` is the byte count when the engine knows it before reading."""

    chunks: Iterator[bytes]
    size: int | None = None
    close: Callable[[], None] = field(default=lambda: None)

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def __enter__(self) -> GuestFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ConsoleStream(ABC):
    """An open, interactive console of a running VM (its serial port, a container's tty).
    Blocking calls, used from one reader thread and one writer at a time."""

    @abstractmethod
    def read(self, timeout: float) -> bytes:
        """What the console printed, up to a chunk; b"" when nothing came within `timeout`
        seconds. Raises ConsoleClosed once the console is gone (VM stopped, stream ended)."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Type `data` into the console. Raises ConsoleClosed once the console is gone."""

    @abstractmethod
    def close(self) -> None:
        """Let go of the console (idempotent): the VM runs on."""


# --- what can go wrong, each with the code the API answers with ---------------------------


class ConsoleClosed(EngineError):
    """The console ended: its VM stopped, or the engine closed the stream."""

    code = ErrorCode.GUEST_CONSOLE


class GuestPathMissing(EngineError):
    """No such file or directory in the guest (the API's 404)."""

    code = ErrorCode.NOT_FOUND


class GuestPathDenied(EngineError):
    """The guest refused access to the path (the API's 403)."""

    code = ErrorCode.FORBIDDEN


class GuestUnreachable(EngineError):
    """Nothing in the guest answers (no agent running, the guest still booting): 422."""

    code = ErrorCode.UNSUPPORTED


def unsupported(engine: str, feature: str) -> EngineError:
    """An engine asked for a call it does not have (its features lack `feature`)."""
    return EngineError(f"the {engine} engine lacks the feature {feature}", code=ErrorCode.UNSUPPORTED)
