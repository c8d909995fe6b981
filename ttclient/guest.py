"""Into a running VM: run a command (whole, or streamed as server-sent events), copy files in
and out (streamed both ways), and its console over a websocket.

A VM whose engine or template cannot do one of these answers 422 `unsupported_feature`
(ApiError.unsupported): its message names what lacks the feature.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from ttclient.types import ExecResult, FileEntry

if TYPE_CHECKING:
    from ttclient.client import Client

CHUNK = 64 * 1024


def _exec_body(command: list[str], stdin: bytes | str | None, env: Mapping[str, str] | None,
               cwd: str | None, timeout: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"command": list(command)}
    if stdin:
        body["stdin"] = stdin.decode() if isinstance(stdin, bytes) else stdin
    if env:
        body["env"] = dict(env)
    if cwd:
        body["cwd"] = cwd
    if timeout is not None:
        body["timeout"] = timeout
    return body


@dataclass(frozen=True)
class ExecEvent:
    """One event of a streamed command: `stdout` or `stderr` with `text`, then one `exit`
    whose `result` is the whole ExecResult."""

    kind: str
    text: str = ""
    result: ExecResult | None = None


def output_text(data: Any) -> str:
    """The output an event carries: a string, or an object holding it (as text or base64)."""
    if isinstance(data, str):
        return data
    if isinstance(data, dict):
        for key in ("data", "text", "output", "chunk"):
            if isinstance(data.get(key), str):
                return data[key]
        if isinstance(data.get("base64"), str):
            return base64.b64decode(data["base64"]).decode(errors="replace")
    return ""


def server_sent_events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream (the WHATWG format: `event:` and `data:`
    fields, a blank line ends an event; `:` lines are comments)."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


class Exec:
    """client.exec(vm_id, ["hostname"]): run a command in the VM (an argv, no shell unless
    it names one) and get its ExecResult; client.exec.stream(...) yields its output as it comes."""

    def __init__(self, client: Client):
        self.client = client

    def __call__(self, vm_id: int, command: list[str], *, stdin: bytes | str | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | None = None,
                 timeout: float | None = None) -> ExecResult:
        body = _exec_body(command, stdin, env, cwd, timeout)
        return self.client.request("POST", f"/api/vms/{vm_id}/exec/", json=body,
                                   **_long(self.client, timeout)).json()

    def stream(self, vm_id: int, command: list[str], *, stdin: bytes | str | None = None,
               env: Mapping[str, str] | None = None, cwd: str | None = None,
               timeout: float | None = None) -> Iterator[ExecEvent]:
        """The command's output as it is printed (ExecEvent stdout/stderr), ending with its
        `exit` event."""
        body = _exec_body(command, stdin, env, cwd, timeout)
        response = self.client.stream("POST", f"/api/vms/{vm_id}/exec/", params={"stream": "1"}, json=body,
                                      headers={"Accept": "text/event-stream"}, **_long(self.client, timeout))
        try:
            for event, data in server_sent_events(_lines(response)):
                payload = json.loads(data) if data[:1] in "{[\"" else data
                if event == "exit":
                    yield ExecEvent("exit", result=payload)
                    return
                if event in ("stdout", "stderr"):
                    yield ExecEvent(event, text=output_text(payload))
                elif event == "error":
                    from ttclient.errors import ApiError

                    error = payload if isinstance(payload, dict) else {"message": str(payload)}
                    raise ApiError(200, str(error.get("code", "guest_exec")), str(error.get("message", "")),
                                   str(error.get("field") or ""), error)
        finally:
            response.close()


def _guarded(chunks: Iterator, url: str) -> Iterator:
    """A streamed answer, its connection lost midway raised as ConnectionFailed."""
    import httpx

    from ttclient.errors import ConnectionFailed

    try:
        yield from chunks
    except httpx.TransportError as exc:
        raise ConnectionFailed(f"{url}: the answer stopped midway ({exc or type(exc).__name__})") from exc


def _lines(response) -> Iterator[str]:
    return _guarded(response.iter_lines(), str(response.request.url))


def _long(client: Client, timeout: float | None) -> dict:
    """A read timeout that outlasts the command's own (the server answers once it ends)."""
    import httpx

    if timeout is None:
        return {}
    base = client.http.timeout
    return {"timeout": httpx.Timeout(base.connect or 30.0, read=timeout + 30.0)}


class Files:
    """Files in a running VM: put (from bytes or a file, streamed), get (streamed), list."""

    def __init__(self, client: Client):
        self.client = client

    def put(self, vm_id: int, path: str, data: bytes | BinaryIO | Iterable[bytes], *,
            mode: int | None = None, size: int | None = None) -> dict:
        """Write `data` to the absolute `path` in the guest (made or replaced), with `mode`.

        The server takes a body that declares its size (a Content-Length; a chunked one is
        refused), so it can refuse one past its limit before a byte reaches the guest: bytes and
        a regular file tell theirs, chunks from elsewhere need `size`."""
        params: dict[str, str] = {"path": path}
        if mode is not None:
            params["mode"] = f"{mode:04o}"
        if isinstance(data, bytes):
            content, size = data, len(data)
        else:
            size = _size_of(data) if size is None else size
            content = _chunks(data)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        response = self.client.request("PUT", f"/api/vms/{vm_id}/files/", params=params, content=content,
                                       headers=headers)
        return response.json() if response.content else {}

    def get(self, vm_id: int, path: str) -> Iterator[bytes]:
        """The file's bytes, chunk by chunk as they arrive (never all in memory)."""
        response = self.client.stream("GET", f"/api/vms/{vm_id}/files/", params={"path": path},
                                      headers={"Accept": "application/octet-stream"})
        try:
            yield from _guarded(response.iter_bytes(CHUNK), self.client.url)
        finally:
            response.close()

    def read(self, vm_id: int, path: str) -> bytes:
        return b"".join(self.get(vm_id, path))

    def list(self, vm_id: int, path: str) -> list[FileEntry]:
        body = self.client.get(f"/api/vms/{vm_id}/files/", path=path, list="1")
        return body["entries"] if isinstance(body, dict) and "entries" in body else body


def _size_of(data) -> int:
    """The bytes left to read in a file opened for reading; a TypeError for anything else."""
    try:
        return os.fstat(data.fileno()).st_size - data.tell()
    except (AttributeError, OSError, ValueError):
        raise TypeError("files.put: give the size of data that is neither bytes nor a regular file "
                        "(size=...): the server takes a body that declares its size") from None


def _chunks(data: BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
    if hasattr(data, "read"):
        while chunk := data.read(CHUNK):  # type: ignore[union-attr]
            yield chunk
    else:
        yield from data  # type: ignore[misc]


class Console:
    """A VM's console, open: `recv()` what it prints (bytes; None once it closed, b"" when
    nothing came within `timeout`), `send(bytes)` keystrokes, `close()`."""

    def __init__(self, connection, release=lambda: None):
        self.connection = connection
        self.release = release

    def recv(self, timeout: float | None = None) -> bytes | None:
        from websockets.exceptions import ConnectionClosed

        try:
            message = self.connection.recv(timeout=timeout)
        except TimeoutError:
            return b""
        except ConnectionClosed:
            return None
        return message.encode() if isinstance(message, str) else message

    def send(self, data: bytes) -> None:
        self.connection.send(data)

    def close(self) -> None:
        self.connection.close()
        self.release()

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def console_url(base_url: str, vm_id: int) -> str:
    scheme, _, rest = base_url.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/api/vms/{vm_id}/console/"


def open_console(client: Client, vm_id: int) -> Console:
    """Open the VM's console websocket (Authorization: Token). A refusal before the upgrade
    (404, 422 unsupported_feature…) is raised as ApiError with the API's message."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    from ttclient.client import USER_AGENT
    from ttclient.errors import ApiError

    headers = {"Authorization": f"Token {client.token}"} if client.token else {}
    # websockets wants connect() entered as a context manager: held open until close().
    held = contextlib.ExitStack()
    try:
        connection = held.enter_context(connect(console_url(client.url, vm_id), additional_headers=headers,
                                                user_agent_header=USER_AGENT, open_timeout=30, max_size=None))
    except InvalidStatus as exc:
        response = exc.response
        try:
            body = json.loads(response.body or b"{}")
        except ValueError:
            body = {}
        raise ApiError(response.status_code, str(body.get("code", f"http_{response.status_code}")),
                       str(body.get("message") or response.reason_phrase), str(body.get("field") or ""),
                       body or None) from exc
    return Console(connection, held.close)
