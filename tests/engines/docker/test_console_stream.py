"""A container's console (engines/docker/console_stream.py) against a fake engine on a unix
socket: the exec start's answer and the shell's first output arrive in one packet, and
neither is lost; keystrokes reach the engine; the shell's end ends the console."""

from __future__ import annotations

import socket
import threading

import pytest

from engines.docker.console_stream import DockerConsole
from engines.errors import EngineError
from engines.guest_io import ConsoleClosed


class FakeApi:
    """docker.APIClient's exec_create, enough for the console."""

    def __init__(self):
        self.created = []

    def exec_create(self, container, cmd, **kwargs):
        self.created.append((container, cmd, kwargs))
        return {"Id": "e1"}

    def exec_resize(self, exec_id, height, width):
        self.created.append(("resize", exec_id, height, width))


class FakeClient:
    def __init__(self):
        self.api = FakeApi()


def fake_engine(tmp_path, answer: bytes, *, echo: bool = True):
    """A unix socket answering the exec start with `answer`, then echoing what it gets once."""
    path = str(tmp_path / "engine.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    got = []

    def serve():
        conn, _ = server.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            head, _, _body = request.partition(b"\r\n\r\n")
            got.append(head)
            conn.sendall(answer)
            if not echo:
                return
            typed = conn.recv(4096)
            got.append(typed)
            conn.sendall(b"you typed " + typed)
            conn.shutdown(socket.SHUT_WR)  # the shell exits

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"unix://{path}", got, thread, server


def read_until(console, wanted: bytes) -> bytes:
    seen = b""
    for _ in range(100):
        seen += console.read(0.1)
        if wanted in seen:
            return seen
    raise AssertionError(f"no {wanted!r} in {seen!r}")


def test_the_first_prompt_in_the_answers_packet_is_kept_and_keystrokes_go_through(tmp_path):
    uri, got, thread, server = fake_engine(
        tmp_path, b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n/ # ")
    client = FakeClient()
    console = DockerConsole(client, uri, "1.41", "tt-node-vm")
    try:
        assert console.read(1) == b"/ # "
        assert client.api.created[0][:2] == ("tt-node-vm", ["/bin/sh"])
        assert client.api.created[0][2]["tty"] and client.api.created[0][2]["stdin"]
        console.write(b"ls\r")
        assert b"you typed ls\r" in read_until(console, b"ls\r")
        with pytest.raises(ConsoleClosed):
            for _ in range(50):
                console.read(0.1)
    finally:
        console.close()
        server.close()
    thread.join(5)
    assert got[0].startswith(b"POST /v1.41/exec/e1/start HTTP/1.1") and b"Upgrade: tcp" in got[0]
    assert got[1] == b"ls\r"


def test_a_refused_start_is_an_engine_error(tmp_path):
    refusal = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nno such x"
    uri, _got, _thread, server = fake_engine(tmp_path, refusal, echo=False)
    with pytest.raises(EngineError, match=r"refused the console: HTTP/1\.1 404"):
        DockerConsole(FakeClient(), uri, "1.41", "gone")
    server.close()
