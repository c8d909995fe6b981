"""POST /api/vms/{id}/exec/ and GET/PUT /api/vms/{id}/files/ (vms/guest_api.py) against a
fake guest: the answers, their errors, the event stream's order, an upload streamed to
the engine as it arrives, the schema, and who may (the authorization matrix)."""

from __future__ import annotations

import io
import json

import pytest
from rest_framework.test import APIClient

from operations.models import Operation
from tests.api_support import client_for
from tests.conftest import make_staff
from vms.guest_access import CHUNK
from vms.models import Vm

VIEW = ("envs.view_env", "vms.view_vm", "vms.view_snapshot", "operations.view_operation")


@pytest.fixture
def vm(alice, make_env, guest) -> Vm:
    return make_env(alice).vms.get()


def _exec(client, vm, body, query=""):
    return client.post(f"/api/vms/{vm.pk}/exec/{query}", body, format="json")


# --- exec ---------------------------------------------------------------------------------


def test_it_runs_a_command_and_answers_its_result(alice, vm):
    response = _exec(client_for(alice), vm, {"command": ["fail"]})
    assert response.status_code == 200, response.content
    assert response.json() == {
        "exit_code": 3, "signal": None, "stdout": "", "stderr": "boom\n", "stdout_truncated": False,
        "stderr_truncated": False, "truncated": False, "duration_ms": 5, "timed_out": False,
    }


def test_it_passes_stdin_and_decodes_output_that_is_not_utf8_with_replacement(alice, vm):
    api = client_for(alice)
    assert _exec(api, vm, {"command": ["cat"], "stdin": "ünïcode\n"}).json()["stdout"] == "ünïcode\n"
    assert _exec(api, vm, {"command": ["bytes"]}).json()["stdout"] == "ok \ufffd\ufffd end\n"


def test_it_answers_a_timed_out_command(alice, vm):
    body = _exec(client_for(alice), vm, {"command": ["sleep", "9"], "timeout": 1}).json()
    assert (body["timed_out"], body["exit_code"]) == (True, None)


@pytest.mark.parametrize(("body", "status", "field"), [
    ({}, 400, "command"),
    ({"command": []}, 400, "command"),
    ({"command": "ls"}, 400, "command"),
    ({"command": ["ls", 1]}, 400, "command[1]"),
    ({"command": ["ls", "a\x00"]}, 400, "command[1]"),
    ({"command": [""]}, 422, "command[0]"),
    ({"command": ["ls"], "timeout": 0}, 400, "timeout"),
    ({"command": ["ls"], "timeout": 601}, 400, "timeout"),
    ({"command": ["ls"], "timeout": "5"}, 400, "timeout"),
    ({"command": ["ls"], "cwd": "tmp"}, 400, "cwd"),
    ({"command": ["ls"], "env": {"A": 1}}, 400, "env.A"),
    ({"command": ["ls"], "env": {"A=B": "1"}}, 422, "env"),
    ({"command": ["ls"], "user": "a b"}, 400, "user"),
    ({"command": ["ls"], "shell": True}, 400, "shell"),
])
def test_it_refuses_a_bad_body_naming_the_field_and_records_nothing(alice, vm, db_state, body, status, field):
    before = db_state()
    response = _exec(client_for(alice), vm, body)
    assert response.status_code == status, response.content
    assert response.json()["code"] == "invalid"
    assert field in response.json()["errors"], response.json()
    assert db_state() == before


def test_a_template_without_exec_is_a_422_naming_the_feature(alice, vm, template, db_state):
    template.features = []
    template.save()
    before = db_state()
    response = _exec(client_for(alice), vm, {"command": ["ls"]})
    assert (response.status_code, response.json()["code"]) == (422, "unsupported_feature")
    assert "feature exec" in response.json()["message"]
    assert db_state() == before


def test_a_firecracker_node_is_a_422_naming_the_feature(alice, vm):
    from nodes.models import Node

    Node.objects.filter(pk=vm.node_id).update(kind="firecracker")
    response = _exec(client_for(alice), vm, {"command": ["ls"]})
    assert (response.status_code, response.json()["code"]) == (422, "unsupported_feature")
    assert "firecracker engine" in response.json()["message"] and "exec" in response.json()["message"]


def test_a_vm_not_running_is_a_409(alice, vm):
    Vm.objects.filter(pk=vm.pk).update(status=Vm.Status.STOPPING)
    response = _exec(client_for(alice), vm, {"command": ["ls"]})
    assert (response.status_code, response.json()["code"]) == (409, "illegal_state")


def test_the_rate_limit_is_a_429_with_retry_after(alice, vm, settings):
    settings.TT_RATE_EXEC = "1/m"
    api = client_for(alice)
    assert _exec(api, vm, {"command": ["ls"]}).status_code == 200
    response = _exec(api, vm, {"command": ["ls"]})
    assert response.status_code == 429
    assert (response.json()["code"], response.json()["limit_name"]) == ("rate_limited", "exec")
    assert int(response["Retry-After"]) >= 1


def test_an_engine_failure_is_a_502_recorded_as_failed(alice, vm):
    response = _exec(client_for(alice), vm, {"command": ["crash"]})
    assert (response.status_code, response.json()["code"]) == (502, "guest_exec")
    assert Operation.objects.get(kind="vm_exec").status == "failed"


def _events(raw: bytes) -> list[tuple[str, object]]:
    events = []
    for block in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.mark.django_db(transaction=True)
def test_the_stream_gives_output_as_it_comes_and_the_exit_last(alice, vm, guest):
    response = _exec(client_for(alice), vm, {"command": ["chunks", "first ", "second"]}, "?stream=1")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    body = iter(response.streaming_content)
    first = next(body)
    # The command still runs (it waits for `release` after its first chunk): the chunk came first.
    assert _events(first) == [("stdout", "first ")] and not guest.ended.is_set()
    guest.release.set()
    events = _events(b"".join(body))
    assert events[:-1] == [("stdout", "second")]
    name, result = events[-1]
    assert name == "exit" and (result["exit_code"], result["stdout"]) == (0, "first second")
    op = Operation.objects.get(kind="vm_exec")  # recorded by the command's own thread
    assert (op.status, op.params["exit_code"]) == ("succeeded", 0)


@pytest.mark.django_db(transaction=True)
def test_the_stream_ends_with_an_error_event_when_the_engine_fails(alice, vm):
    response = _exec(client_for(alice), vm, {"command": ["crash"]}, "?stream=1")
    assert _events(b"".join(response.streaming_content)) == [
        ("error", {"code": "guest_exec", "message": "the guest agent answered garbage"})]


def test_a_refused_stream_is_a_plain_json_error(alice, vm, template):
    template.features = []
    template.save()
    response = _exec(client_for(alice), vm, {"command": ["ls"]}, "?stream=1")
    assert (response.status_code, response["Content-Type"]) == (422, "application/json")


# --- files --------------------------------------------------------------------------------


def _put(client, vm, data: bytes, query="?path=/tmp/f", **extra):
    return client.put(f"/api/vms/{vm.pk}/files/{query}", data, content_type="application/octet-stream",
                      **extra)


def test_it_uploads_a_file_and_downloads_it_back(alice, vm, guest):
    api = client_for(alice)
    data = bytes(range(256)) * 4000  # 1000 KiB, several chunks
    response = _put(api, vm, data, "?path=/tmp/f.bin&mode=0600&owner=tt:tt")
    assert (response.status_code, response.json()) == (201, {"path": "/tmp/f.bin", "size": len(data)})
    assert (guest.files["/tmp/f.bin"], guest.modes["/tmp/f.bin"], guest.owners["/tmp/f.bin"]) == (
        data, 0o600, "tt:tt")
    response = api.get(f"/api/vms/{vm.pk}/files/?path=/tmp/f.bin", HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == 'attachment; filename="f.bin"'
    assert response["Content-Length"] == str(len(data))
    assert b"".join(response.streaming_content) == data
    kinds = list(Operation.objects.filter(vm=vm).order_by("pk").values_list("kind", "params__bytes"))
    assert kinds[-2:] == [("vm_file_put", len(data)), ("vm_file_get", len(data))]


def test_it_lists_a_directory(alice, vm, guest):
    guest.files["/srv/a"] = b"abc"
    guest.modes["/srv/a"] = 0o755
    response = client_for(alice).get(f"/api/vms/{vm.pk}/files/?path=/srv&list=1")
    assert response.json() == [
        {"name": "a", "kind": "file", "size": 3, "mode": "0755", "mtime": 1_700_000_000.0}]


class Upload(io.RawIOBase):
    """A request body arriving from a socket: how much of it the server has read."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, size=-1):
        size = len(self.data) - self.pos if size is None or size < 0 else size
        chunk = self.data[self.pos:self.pos + size]
        self.pos += len(chunk)
        return chunk


def test_an_upload_reaches_the_engine_in_chunks_before_the_body_is_read(alice, vm, guest):
    data = b"z" * (16 * CHUNK)
    body = Upload(data)
    read_at_first_chunk = []
    guest.on_first_chunk = lambda: read_at_first_chunk.append(body.pos)
    response = _put(client_for(alice), vm, data, **{"wsgi.input": body})
    assert response.status_code == 201, response.content
    assert read_at_first_chunk == [CHUNK]  # one chunk read from the socket, not the whole body
    assert max(guest.chunks_seen) == CHUNK and sum(guest.chunks_seen) == len(data)


def test_an_upload_past_the_limit_is_a_413_and_nothing_reaches_the_guest(alice, vm, guest, settings,
                                                                        db_state):
    settings.TT_FILE_MAX_MB = 1
    body = Upload(b"y" * (1024 * 1024 + 1))
    before = db_state()
    response = _put(client_for(alice), vm, body.data, **{"wsgi.input": body})
    assert response.status_code == 413
    assert (response.json()["code"], response.json()["limit"]) == ("too_large", 1024 * 1024)
    assert body.pos == 0 and not guest.files and db_state() == before


def test_a_chunked_upload_without_its_size_is_refused(alice, vm, guest):
    response = client_for(alice).generic("PUT", f"/api/vms/{vm.pk}/files/?path=/tmp/f", b"",
                                         content_type="application/octet-stream",
                                         HTTP_TRANSFER_ENCODING="chunked", CONTENT_LENGTH="")
    assert (response.status_code, response.json()["field"]) == (400, "Content-Length")
    assert not guest.files


@pytest.mark.parametrize(("method", "query", "status", "code", "field"), [
    ("get", "?path=/missing/f", 404, "not_found", None),
    ("put", "?path=/missing/f", 404, "not_found", None),
    ("get", "?path=/root/f", 403, "forbidden", None),
    ("put", "?path=/root/f", 403, "forbidden", None),
    ("get", "?path=/tmp/none", 404, "not_found", None),
    ("get", "", 400, "invalid", "path"),
    ("put", "", 400, "invalid", "path"),
    ("get", "?path=relative", 400, "invalid", "path"),
    ("put", "?path=relative", 400, "invalid", "path"),
    ("get", "?path=/tmp&list=maybe", 400, "invalid", "list"),
    ("put", "?path=/tmp/f&mode=888", 400, "invalid", "mode"),
    ("put", "?path=/tmp/f&owner=a:b:c", 400, "invalid", "owner"),
])
def test_file_errors(alice, vm, method, query, status, code, field):
    api = client_for(alice)
    if method == "put":
        response = _put(api, vm, b"data", query)
    else:
        response = api.get(f"/api/vms/{vm.pk}/files/{query}")
    assert (response.status_code, response.json()["code"]) == (status, code), response.content
    if field:
        assert response.json()["field"] == field


def test_a_template_without_files_is_a_422_naming_the_feature(alice, vm, template):
    template.features = ["exec"]
    template.save()
    response = _put(client_for(alice), vm, b"data")
    assert (response.status_code, response.json()["code"]) == (422, "unsupported_feature")
    assert "feature files" in response.json()["message"]


# --- session: the browser's, with its CSRF token -------------------------------------------


def test_a_session_needs_its_csrf_token(alice, vm, guest):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(alice)
    refused = _put(browser, vm, b"data")
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden") and not guest.files
    refused = _exec(browser, vm, {"command": ["echo"]})
    assert refused.status_code == 403 and not guest.requests
    browser.get("/")  # the portal's page sets the CSRF cookie
    token = browser.cookies["csrftoken"].value
    assert _put(browser, vm, b"data", HTTP_X_CSRFTOKEN=token).status_code == 201
    assert browser.post(f"/api/vms/{vm.pk}/exec/", {"command": ["echo"]}, format="json",
                        HTTP_X_CSRFTOKEN=token).status_code == 200


# --- who may ------------------------------------------------------------------------------


def _caller(role, alice, bob, olga, stan):
    return {
        "owner": lambda: client_for(alice),
        "other": lambda: client_for(bob),
        "anonymous": APIClient,
        "staff_bare": lambda: client_for(stan),
        "staff_viewer": lambda: client_for(make_staff("vera", *VIEW)),
        "staff_exec": lambda: client_for(make_staff("exa", *VIEW, "vms.exec_vm")),
        "staff_files": lambda: client_for(make_staff("fil", *VIEW, "vms.files_vm")),
        "staff_console": lambda: client_for(make_staff("con", *VIEW, "vms.console_vm")),
        "operator": lambda: client_for(olga),
    }[role]()


ALLOWED = {"owner", "operator"}
WAY = {"exec": "staff_exec", "put": "staff_files", "get": "staff_files", "list": "staff_files"}


def _call(client, way, vm):
    if way == "exec":
        return _exec(client, vm, {"command": ["echo", "hi"]})
    if way == "put":
        return _put(client, vm, b"data")
    if way == "get":
        return client.get(f"/api/vms/{vm.pk}/files/?path=/etc/hostname")
    return client.get(f"/api/vms/{vm.pk}/files/?path=/etc&list=true")


@pytest.mark.parametrize("role", ["owner", "other", "anonymous", "staff_bare", "staff_viewer", "staff_exec",
                                  "staff_files", "staff_console", "operator"])
@pytest.mark.parametrize("way", ["exec", "put", "get", "list"])
def test_each_caller_gets_exactly_what_it_should(role, way, vm, guest, alice, bob, olga, stan, db_state):
    guest.files["/etc/hostname"] = b"vm0\n"
    client = _caller(role, alice, bob, olga, stan)
    before = db_state()
    response = _call(client, way, vm)
    if role in ALLOWED or role == WAY[way]:
        assert response.status_code in (200, 201), (role, way, response.content)
        return
    expected = {"anonymous": (401, "not_authenticated"), "other": (404, "not_found"),
                "staff_bare": (404, "not_found")}.get(role, (403, "forbidden"))
    assert (response.status_code, response.json()["code"]) == expected, (role, way)
    assert db_state() == before and not guest.requests and list(guest.files) == ["/etc/hostname"]


# --- the schema ---------------------------------------------------------------------------


def test_the_schema_describes_the_bodies(alice):
    schema = client_for(alice).get("/api/schema/?format=json").json()
    exec_op = schema["paths"]["/api/vms/{id}/exec/"]["post"]
    assert set(exec_op["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    body = schema["components"]["schemas"]["ExecBodyRequest"]
    assert body["required"] == ["command"] and body["additionalProperties"] is False
    assert body["properties"]["timeout"] == {**body["properties"]["timeout"], "minimum": 1, "maximum": 600,
                                             "default": 30}
    result = schema["components"]["schemas"]["ExecResult"]
    assert {"exit_code", "stdout", "stderr", "stdout_truncated", "stderr_truncated", "truncated",
            "duration_ms", "timed_out"} <= set(result["required"])
    files = schema["paths"]["/api/vms/{id}/files/"]
    assert files["put"]["requestBody"]["content"] == {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    assert set(files["get"]["responses"]["200"]["content"]) == {"application/octet-stream",
                                                                "application/json"}
    assert {"413", "422", "404", "403"} <= set(files["put"]["responses"])


# --- under ASGI ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the ASGI handler runs the view in a thread of its own
def test_a_download_is_streamed_under_asgi_too(alice, vm, guest):
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    from accounts.services import token_create

    guest.files["/tmp/big"] = b"q" * (8 * 64 * 1024)
    _, secret = token_create(user=alice, name="asgi")
    client = AsyncClient()

    async def download():
        response = await client.get(f"/api/vms/{vm.pk}/files/?path=/tmp/big",
                                    headers={"Authorization": f"Token {secret}"})
        assert response.status_code == 200, response.content
        assert response.is_async  # an asynchronous body: Django does not read it into a list first
        return response, [chunk async for chunk in response.streaming_content]

    response, chunks = async_to_sync(download)()
    assert response.status_code == 200 and response["Content-Length"] == str(8 * 64 * 1024)
    assert len(chunks) == 8 and b"".join(chunks) == guest.files["/tmp/big"]


@pytest.mark.django_db(transaction=True)
def test_the_event_stream_is_streamed_under_asgi_too(alice, vm, guest):
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    from accounts.services import token_create

    _, secret = token_create(user=alice, name="asgi")

    async def follow():
        response = await AsyncClient().post(
            f"/api/vms/{vm.pk}/exec/?stream=1", {"command": ["chunks", "first ", "second"]},
            content_type="application/json", headers={"Authorization": f"Token {secret}"})
        assert response.status_code == 200 and response.is_async
        body = response.streaming_content.__aiter__()
        first = await body.__anext__()
        running = not guest.ended.is_set()
        guest.release.set()
        return first, running, [chunk async for chunk in body]

    first, running, rest = async_to_sync(follow)()
    assert _events(first) == [("stdout", "first ")] and running
    assert [name for name, _ in _events(b"".join(rest))] == ["stdout", "exit"]


# --- a real server, a client that goes away ------------------------------------------------


def test_the_stream_ends_when_the_client_goes_away_and_the_command_is_still_recorded(
        live_server, alice, vm, guest, monkeypatch):
    import threading
    import time

    import requests

    from accounts.services import token_create
    from vms import guest_api

    streams = []

    class Watched(threading.Event):
        def __init__(self):
            super().__init__()
            streams.append(self)

    monkeypatch.setattr(guest_api, "KEEPALIVE", 0.1)  # the server writes soon, and learns the client left
    monkeypatch.setattr(guest_api.threading, "Event", Watched)
    _, secret = token_create(user=alice, name="sse")
    with requests.post(f"{live_server.url}/api/vms/{vm.pk}/exec/?stream=1", stream=True, timeout=10,
                       json={"command": ["chunks", "first ", "second"]},
                       headers={"Authorization": f"Token {secret}"}) as response:
        assert response.status_code == 200
        first = b""
        for byte in response.iter_content(chunk_size=1):  # the test server neither chunks nor sizes it
            first += byte
            if first.endswith(b"\n\n"):
                break
        assert _events(first) == [("stdout", "first ")]
    # The client has gone while the command still runs: the response ends (its `gone` is set) ...
    deadline = time.monotonic() + 10
    while not streams[0].is_set():
        assert time.monotonic() < deadline, "the response did not end when its client went away"
        time.sleep(0.05)
    assert not guest.ended.is_set()
    # ... and the command runs on to its end, unheard, and is recorded.
    guest.release.set()
    while not Operation.objects.filter(kind="vm_exec").exists():
        assert time.monotonic() < deadline + 10, "the command was not recorded"
        time.sleep(0.05)
    assert Operation.objects.get(kind="vm_exec").params["exit_code"] == 0
