"""The command line's parts without a server: names and durations, connection lines, the
stored token, error lines, exec's exit code, cp both ways and the console, the latter three
against a fake API (httpx.MockTransport)."""

from __future__ import annotations

import json
import os
import stat

import httpx
import pytest

from tests.ttclient.test_client import FakeServer
from ttcli import config, connections, readiness, refs
from ttcli.errors import Failure, human

ENV = {"id": 3, "name": "demo", "vms": [{"id": 5, "name": "web"}]}
VM = {"id": 5, "name": "web", "net_kind": "nat", "ip": "10.0.0.5", "ports": [
    {"protocol": "tcp", "inner_port": 22, "public_port": 31022, "endpoint": "tt.example.org:31022"},
    {"protocol": "tcp", "inner_port": 80, "public_port": 31080, "endpoint": "tt.example.org:31080"},
    {"protocol": "udp", "inner_port": 53, "public_port": 31053, "endpoint": "tt.example.org:31053"}]}


def test_vms_paths_and_durations_are_named_as_documented():
    assert refs.vm_ref("demo/web") == refs.VmRef("demo", "web")
    assert refs.vm_ref("alice/demo/web") == refs.VmRef("alice/demo", "web")
    assert refs.remote_path("demo/web:/etc/hosts") == (refs.VmRef("demo", "web"), "/etc/hosts")
    assert refs.remote_path("./notes:/x") is None and refs.remote_path("demo/web:relative") is None
    texts = ("90", "90s", "30m", "2h", "1d", "1h30m")
    assert [refs.seconds(t) for t in texts] == [90, 90, 1800, 7200, 86400, 5400]
    for bad in ("2x", "h", "", "1h-2m"):
        with pytest.raises(Failure) as refused:
            refs.seconds(bad)
        assert refused.value.code == 2
    with pytest.raises(Failure):
        refs.vm_ref("web")


def test_connection_lines_say_how_to_reach_each_port():
    assert [c.line for c in connections.connections(VM)] == [
        "ssh -p 31022 tt@tt.example.org", "http://tt.example.org:31080/", "tt.example.org:31053 (53/udp)"]
    assert connections.ssh_target(VM) == ("tt.example.org", 31022)
    flat = {"id": 6, "name": "db", "net_kind": "flat", "ip": "192.0.2.9", "ports": []}
    assert [c.line for c in connections.connections(flat)] == ["ssh tt@192.0.2.9"]
    with pytest.raises(Failure, match="forwards no port 22"):
        connections.ssh_target({**VM, "ports": VM["ports"][1:]})


def test_the_token_is_kept_for_the_user_alone_and_the_environment_overrides_it(tt_config, monkeypatch):
    path = config.save("https://tt.example.org/", "ttp_x", "alice")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(tt_config.stat().st_mode) == 0o700
    assert config.credentials() == config.Credentials("https://tt.example.org", "ttp_x", "alice", "config")
    monkeypatch.setenv("TT_TOKEN", "ttp_ci")
    assert config.credentials().token == "ttp_ci" and config.credentials().source == "environment"


def test_errors_name_the_field_as_the_api_does():
    assert human({"code": "invalid", "field": "vms[0].mem_mb", "message": "must be at least 64"}) == \
        "vms[0].mem_mb: must be at least 64"
    lacking = "template tt/busybox lacks the feature exec"
    shown = human({"code": "unsupported_feature", "message": lacking})
    assert shown == f"not available on this VM: {lacking}"


def test_each_vms_last_message_is_read_from_the_operation_log():
    log = "12:00:01 web: creating runtime image\n12:00:02 db: defining VM\n12:00:03 web: VM booted\n"
    assert readiness.vm_messages(log) == {"web": "VM booted", "db": "defining VM"}


def test_the_port_probe_finds_the_ports_that_accept_and_keeps_waiting_on_the_others():
    import socket
    import time

    listening = socket.create_server(("127.0.0.1", 0))
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    open_target, closed_target = ("127.0.0.1", listening.getsockname()[1]), ("127.0.0.1", closed_port)
    probe = readiness.PortProbe([open_target, closed_target])
    answered, end = set(), time.monotonic() + 2
    while open_target not in answered and time.monotonic() < end:
        answered |= probe.step(0.05)
    probe.close()
    listening.close()
    assert answered == {open_target} and probe.pending == {closed_target}


@pytest.fixture
def fake_api(monkeypatch, tt_config):
    """A logged-in tt whose server is a FakeServer: its routes are the test's to add."""
    from ttclient import Client

    server = FakeServer(("GET", "/api/envs/", httpx.Response(200, json={"next": None, "results": [ENV]})),
                        ("GET", "/api/vms/5/", httpx.Response(200, json=VM)))
    config.save("http://tt.test", "ttp_x", "alice")
    monkeypatch.setattr("ttcli.session.client",
                        lambda: Client("http://tt.test", "ttp_x", transport=httpx.MockTransport(server)))
    return server


def exec_stream(stdout: str, result: dict) -> httpx.Response:
    text = (f"event: stdout\ndata: {json.dumps({'data': stdout})}\n\n"
            f"event: exit\ndata: {json.dumps(result)}\n\n")
    return httpx.Response(200, text=text, headers={"Content-Type": "text/event-stream"})


def test_exec_streams_the_output_and_passes_the_exit_code_through(fake_api, tt):
    fake_api.routes.insert(0, ("POST", "/api/vms/5/exec/", exec_stream("web\n", {"exit_code": 7})))
    result = tt("exec", "demo/web", "-e", "A=1", "--", "sh", "-c", "hostname; exit 7")
    assert (result.exit_code, result.stdout) == (7, "web\n")
    sent = json.loads(fake_api.requests[-1].content)
    assert sent == {"command": ["sh", "-c", "hostname; exit 7"], "env": {"A": "1"}}

    fake_api.routes[0] = ("POST", "/api/vms/5/exec/", exec_stream("", {"exit_code": None, "timed_out": True,
                                                                       "duration_ms": 5000}))
    result = tt("exec", "demo/web", "--timeout", "5", "--", "sleep", "60")
    assert result.exit_code == 3 and "ran past its timeout" in result.stderr


def test_exec_on_a_vm_without_the_feature_says_so(fake_api, tt):
    fake_api.routes.insert(0, ("POST", "/api/vms/5/exec/", httpx.Response(422, json={
        "code": "unsupported_feature", "message": "template tt/busybox lacks the feature exec"})))
    result = tt("exec", "demo/web", "--", "true")
    assert result.exit_code == 1
    assert result.stderr == "tt: not available on this VM: template tt/busybox lacks the feature exec\n"
    result = tt("exec", "demo/web", "--json", "--", "true")
    assert json.loads(result.stderr)["error"]["code"] == "unsupported_feature"


def test_cp_copies_both_ways(fake_api, tt, tmp_path):
    stored = {}

    def put(request):
        stored["file"] = (request.url.params["path"], request.url.params["mode"], request.read())
        return httpx.Response(201, json={})

    fake_api.routes[:0] = [("PUT", "/api/vms/5/files/", put),
                           ("GET", "/api/vms/5/files/", httpx.Response(200, content=b"from the vm"))]
    local = tmp_path / "app.sh"
    local.write_bytes(b"#!/bin/sh\n")
    local.chmod(0o750)
    assert tt("cp", str(local), "demo/web:/opt/app.sh").exit_code == 0
    assert stored["file"] == ("/opt/app.sh", "0750", b"#!/bin/sh\n")
    result = tt("cp", "demo/web:/etc/motd", str(tmp_path), "--json")
    assert json.loads(result.stdout) == {"from": "demo/web:/etc/motd", "to": str(tmp_path / "motd"),
                                         "bytes": 11}
    assert (tmp_path / "motd").read_bytes() == b"from the vm"
    assert tt("cp", str(local), str(tmp_path / "other")).exit_code == 2


def test_the_console_copies_both_ways_and_ctrl_bracket_leaves(monkeypatch):
    from ttcli.terminal import attach

    class FakeConsole:
        def __init__(self):
            self.sent, self.printed = [], [b"login: "]

        def recv(self, timeout=None):
            return self.printed.pop(0) if self.printed else b""

        def send(self, data):
            self.sent.append(data)

    read_end, write_end = os.pipe()
    os.write(write_end, b"root\n\x1dignored")
    out_read, out_write = os.pipe()
    monkeypatch.setattr("sys.stdin", os.fdopen(read_end, "rb", buffering=0))
    stdout = os.fdopen(out_write, "w")
    monkeypatch.setattr("sys.stdout", stdout)
    console = FakeConsole()
    attach(console)
    os.close(write_end)
    stdout.close()
    assert console.sent == [b"root\n"]  # what was typed before Ctrl-], nothing after
    assert os.read(out_read, 100) == b"login: "
    os.close(out_read)
