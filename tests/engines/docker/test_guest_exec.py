"""A command run in a container through the exec API: the multiplexed stream, stdin, the
output bounds, the errors, and the kill at the timeout, against a fake engine that speaks
the stream over a socket pair (the real one: tests/integration/test_docker_guest.py)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time

import pytest
from docker.errors import APIError, NotFound

from engines.docker import guest_exec
from engines.docker.engine import DockerEngine
from engines.docker.guest_exec import ContainerNotRunning, FrameReader, OutputKept, kill_session, run_exec
from engines.errors import EngineError, ErrorCode
from engines.guest_io import ExecRequest
from engines.specs import Feature


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


class FakeResponse:
    def __init__(self, sock: socket.socket):
        self.raw = type("Raw", (), {})()
        self.raw._fp = type("Fp", (), {})()
        self.raw._fp.fp = sock.makefile("rb")  # a BufferedReader over a SocketIO, as http.client's
        self.closed = False

    def close(self):
        self.closed = True


class FakeExecApi:
    """The low-level client's exec calls; `serve(sock)` plays the engine's side of the stream."""

    def __init__(self, serve, *, exit_code=0, pid=0, init_pid=0, create_error=None):
        self.serve, self.exit_code, self.pid, self.init_pid = serve, exit_code, pid, init_pid
        self.create_error = create_error
        self.created: dict = {}
        self.running = True
        self.responses: list[FakeResponse] = []

    def _url(self, path, *args):
        return path.format(*args)

    def exec_create(self, container, cmd, **kwargs):
        if self.create_error:
            raise self.create_error
        self.created = dict(container=container, cmd=cmd, **kwargs)
        return {"Id": "e1"}

    def _post_json(self, url, **kwargs):
        ours, theirs = socket.socketpair()
        threading.Thread(target=self._serve, args=(theirs,), daemon=True).start()
        self.responses.append(FakeResponse(ours))
        return self.responses[-1]

    def _serve(self, sock):
        try:
            self.serve(sock)
        finally:
            self.running = False
            sock.close()

    def _raise_for_status(self, response):
        pass

    def exec_inspect(self, exec_id):
        return {"Running": self.running, "ExitCode": self.exit_code, "Pid": self.pid if self.running else 0}

    def inspect_container(self, container):
        return {"State": {"Pid": self.init_pid, "Running": True}}


def test_frames_are_cut_out_of_the_stream_in_whatever_pieces_it_comes():
    stream = frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"x" * 70_000)
    reader = FrameReader()
    got = []
    for i in range(0, len(stream), 5):
        got += reader.feed(stream[i:i + 5])
    assert got[0] == ("stdout", b"out\n") and got[1] == ("stderr", b"err\n")
    assert b"".join(data for _, data in got[2:]) == b"x" * 70_000


def test_each_stream_keeps_its_limit_and_says_it_was_cut():
    kept = OutputKept(limit=5)
    for data in (b"abc", b"def", b"ghi"):
        kept.add("stdout", data)
    kept.add("stderr", b"ok")
    assert bytes(kept.kept["stdout"]) == b"abcde" and kept.truncated["stdout"]
    assert bytes(kept.kept["stderr"]) == b"ok" and not kept.truncated["stderr"]


def test_it_passes_argv_env_cwd_and_user_and_reports_the_exit_code_and_both_streams():
    def serve(sock):
        sock.sendall(frame(1, b"out\n") + frame(2, b"err\n"))

    api = FakeExecApi(serve, exit_code=3)
    seen = []
    result = run_exec(api, "tt-n-1", ExecRequest(argv=("sh", "-c", "x"), env=(("A", "b c"),), cwd="/tmp",
                                                 user="1000:1000"), lambda s, d: seen.append((s, d)))
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert not result.timed_out
    assert seen == [("stdout", b"out\n"), ("stderr", b"err\n")]
    assert api.created["cmd"] == ["sh", "-c", "x"] and api.created["environment"] == ["A=b c"]
    assert (api.created["workdir"], api.created["user"], api.created["stdin"]) == ("/tmp", "1000:1000", False)
    assert api.responses[0].closed


def test_stdin_is_written_then_half_closed_while_the_output_is_read():
    """The engine echoes all it gets until stdin ends: more than a socket buffer holds, so
    writing all before reading would deadlock."""
    def serve(sock):
        while data := sock.recv(65536):
            sock.sendall(frame(1, data))

    payload = os.urandom(3 * 1024 * 1024)
    api = FakeExecApi(serve)
    result = run_exec(api, "c", ExecRequest(argv=("cat",), stdin=payload, output_limit=len(payload)))
    assert result.stdout == payload and not result.stdout_truncated and api.created["stdin"] is True


def test_output_past_the_limit_is_read_and_dropped():
    def serve(sock):
        sock.sendall(frame(1, b"y" * 100_000) + frame(2, b"e" * 10))

    result = run_exec(FakeExecApi(serve), "c", ExecRequest(argv=("yes",), output_limit=1000))
    assert result.stdout == b"y" * 1000 and result.stdout_truncated
    assert result.stderr == b"e" * 10 and not result.stderr_truncated


def test_output_reaches_the_sink_before_the_command_ends():
    release = threading.Event()

    def serve(sock):
        sock.sendall(frame(1, b"first\n"))
        release.wait(5)
        sock.sendall(frame(1, b"second\n"))

    def sink(stream, data):
        if data == b"first\n":
            release.set()  # only a chunk handed over before the end lets it end

    result = run_exec(FakeExecApi(serve), "c", ExecRequest(argv=("x",)), sink)
    assert result.stdout == b"first\nsecond\n"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_at_its_timeout_the_command_and_its_children_are_killed_from_the_host():
    """The exec's process stands in as a session of our own: a shell with a child in the
    background and one in front; the engine's stream ends when they are all gone."""
    leader = subprocess.Popen(["sh", "-c", "sleep 100 & sleep 100"], start_new_session=True)
    deadline = time.monotonic() + 5
    while len(_children(leader.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    children = _children(leader.pid)
    assert len(children) == 2

    def serve(sock):
        sock.sendall(frame(1, b"started\n"))
        leader.wait()
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline + 5:
            time.sleep(0.01)

    api = FakeExecApi(serve, pid=leader.pid, init_pid=os.getpid())
    started = time.monotonic()
    result = run_exec(api, "c", ExecRequest(argv=("sh",), timeout=0.5))
    assert result.timed_out and result.exit_code is None and result.signal == 9
    assert result.stdout == b"started\n"
    assert 0.5 <= time.monotonic() - started < 3
    assert leader.returncode == -9
    assert not any(_alive(pid) for pid in children)


def _children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(name))
    return found


def test_a_caller_that_gives_up_leaves_no_command_running():
    """The sink raises (a streaming client went away): the command is killed, not orphaned."""
    leader = subprocess.Popen(["sleep", "100"], start_new_session=True)

    def serve(sock):
        sock.sendall(frame(1, b"tick\n"))
        leader.wait()

    def sink(stream, data):
        raise BrokenPipeError("the client left")

    api = FakeExecApi(serve, pid=leader.pid, init_pid=os.getpid())
    with pytest.raises(BrokenPipeError):
        run_exec(api, "c", ExecRequest(argv=("sleep", "100")), sink)
    assert leader.wait(5) == -9


def test_the_kill_spares_processes_of_another_pid_namespace(monkeypatch):
    leader = subprocess.Popen(["sleep", "100"], start_new_session=True)
    try:
        assert kill_session(leader.pid, "pid:[not-this-one]") == []
        assert _alive(leader.pid)
        namespace = os.readlink(f"/proc/{leader.pid}/ns/pid")
        assert kill_session(leader.pid, namespace) == [leader.pid]
        assert leader.wait(5) == -9
    finally:
        leader.kill()


def test_an_engine_on_another_host_kills_by_the_mark_in_the_environment():
    calls = []
    killed = threading.Event()

    def serve(sock):
        if len(calls) == 1:  # the command: it runs until the second exec kills it
            killed.wait(5)

    api = FakeExecApi(serve)
    original = api.exec_create

    def exec_create(container, cmd, **kwargs):
        calls.append((cmd, kwargs.get("environment") or []))
        if len(calls) == 2:
            killed.set()
        return original(container, cmd, **kwargs)

    api.exec_create = exec_create
    result = run_exec(api, "c", ExecRequest(argv=("sleep", "100"), timeout=0.2), local=False)
    assert result.timed_out
    (first, environment), (killer, _) = calls
    mark = next(v.split("=", 1)[1] for v in environment if v.startswith("TT_EXEC_MARK="))
    assert first == ["sleep", "100"] and len(mark) == 32
    assert killer[:2] == ["sh", "-c"] and killer[-2:] == ["TT_EXEC_MARK", mark]


@pytest.mark.parametrize("error, code", [
    (NotFound("no such container"), ErrorCode.ILLEGAL_STATE),
    (APIError("500", explanation="can only create exec sessions on running containers: "
                                 "container state improper"), ErrorCode.ILLEGAL_STATE),
    (APIError("500", explanation="something else broke"), ErrorCode.GUEST_EXEC),
])
def test_a_missing_or_stopped_container_is_an_illegal_state(error, code):
    with pytest.raises(EngineError) as raised:
        run_exec(FakeExecApi(lambda s: None, create_error=error), "c", ExecRequest(argv=("true",)))
    assert raised.value.code == code


def test_an_unknown_user_is_bad_input_naming_the_field():
    error = APIError("500", explanation="unable to find user nobody: no matching entries in passwd file")
    with pytest.raises(EngineError) as raised:
        run_exec(FakeExecApi(lambda s: None, create_error=error), "c",
                 ExecRequest(argv=("id",), user="nobody"))
    assert (raised.value.code, raised.value.field) == (ErrorCode.INVALID, "user")


def test_the_container_check_for_file_calls():
    class Api:
        def __init__(self, state):
            self.state = state

        def inspect_container(self, name):
            if self.state is None:
                raise NotFound("gone")
            return {"State": self.state}

    guest_exec.container_running(Api({"Running": True}), "c")
    for state in (None, {"Running": False}, {"Running": True, "Paused": True}):
        with pytest.raises(ContainerNotRunning):
            guest_exec.container_running(Api(state), "c")


def test_the_docker_engine_declares_exec_and_files():
    assert {Feature.EXEC, Feature.FILES} <= DockerEngine.features
    assert DockerEngine(uri="unix:///x.sock")._engine_is_local
    assert not DockerEngine(uri="tcp://10.0.0.2:2375")._engine_is_local
