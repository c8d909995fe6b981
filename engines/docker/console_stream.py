"""A container's console, live: a shell in a tty of its own, what `podman exec -it CONTAINER
/bin/sh` gives.

Our containers run without a tty (their command's output goes to the engine's log), so
there is no console to attach to: the console is an exec session with a tty running the
image's shell, its stdin and output on one socket (the Docker API's exec start, upgraded
to a raw stream). Each console is a shell of its own; closing it ends that shell, never
the container.

The start request is written by hand on a socket of our own rather than through the SDK:
the SDK reads the answer's headers through a buffer and hands over the socket under it, so
output that came in the same packet as the headers (the shell's first prompt) was lost.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
from urllib.parse import urlsplit

from engines.errors import EngineError, ErrorCode
from engines.guest_io import ConsoleClosed, ConsoleStream

FAILED = ErrorCode.GUEST_CONSOLE

CHUNK = 64 * 1024
SHELL = "/bin/sh"
CONNECT_TIMEOUT = 10.0


def _connect(uri: str) -> socket.socket:
    """A socket to the engine's API at `uri` (unix:///path or tcp://host:port)."""
    parts = urlsplit(uri)
    if parts.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(parts.path)
        return sock
    if parts.scheme in ("tcp", "http"):
        return socket.create_connection((parts.hostname, parts.port or 2375), timeout=CONNECT_TIMEOUT)
    raise EngineError(f"a console needs the engine's API on unix:// or tcp://, not {uri!r}",
                      code=ErrorCode.GUEST_CONSOLE)


def _start(uri: str, api_version: str, exec_id: str) -> tuple[socket.socket, bytes]:
    """Start exec `exec_id` attached: the upgraded socket, and what came after the headers."""
    body = json.dumps({"Detach": False, "Tty": True}).encode()
    request = (f"POST /v{api_version}/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
               f"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n").encode() + body
    sock = _connect(uri)
    try:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(CHUNK)
            if not data:
                raise EngineError("the engine closed the console before answering", code=FAILED)
            answer += data
            if len(answer) > 64 * 1024:
                raise EngineError("the engine's answer to a console start has no end of headers",
                                  code=ErrorCode.GUEST_CONSOLE)
        head, _, rest = answer.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if " 101 " not in status and " 200 " not in status:
            raise EngineError(f"the engine refused the console: {status} {rest[:200]!r}", code=FAILED)
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock, rest


class DockerConsole(ConsoleStream):
    """A shell with a tty in container `name`, from `client` (a docker.DockerClient)."""

    def __init__(self, client, uri: str, api_version: str, name: str, shell: str = SHELL):
        from docker.errors import APIError, NotFound

        try:
            created = client.api.exec_create(name, [shell], stdin=True, tty=True,
                                             environment={"TERM": "xterm"})
        except (APIError, NotFound) as exc:
            raise EngineError(f"cannot open a console in {name}: {exc}", code=FAILED) from exc
        self._client = client
        self._exec_id = created["Id"]
        self._sock, self._pending = _start(uri, api_version, self._exec_id)
        self._closed = False
        self._ended = False
        self._write_lock = threading.Lock()

    def read(self, timeout: float) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        if self._ended or self._closed:
            raise ConsoleClosed("the console ended")
        try:
            ready, _, _ = select.select([self._sock], [], [], timeout)
            if not ready:
                return b""
            data = self._sock.recv(CHUNK)
        except (OSError, ValueError) as exc:
            self._ended = True
            raise ConsoleClosed(f"the console ended: {exc}") from exc
        if not data:  # the shell exited, or the container stopped
            self._ended = True
            raise ConsoleClosed("the console's shell ended")
        return data

    def write(self, data: bytes) -> None:
        if self._ended or self._closed:
            raise ConsoleClosed("the console ended")
        try:
            with self._write_lock:
                self._sock.sendall(data)
        except OSError as exc:
            self._ended = True
            raise ConsoleClosed(f"the console ended: {exc}") from exc

    def resize(self, cols: int, rows: int) -> None:
        """The tty's size, as the terminal showing it has (podman's exec resize)."""
        with contextlib.suppress(Exception):  # a size is a nicety: never end a console over it
            self._client.api.exec_resize(self._exec_id, height=rows, width=cols)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Shutting the socket down gives the shell an end of input: it exits.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()
