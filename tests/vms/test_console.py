"""The live console's websocket (vms/consumers.py) and hub (vms/console.py), through the
whole ASGI stack (ttportal/asgi.py: session and token auth, the origin check), against a
fake console: a guest's shell that echoes what is typed and answers `echo $((6*7))`.

Each scenario runs in one event loop (async_to_sync), whose database calls come back to
the test's thread: they see the test's transaction.
"""

from __future__ import annotations

import asyncio
import json
import queue
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from django.test import Client

from accounts.services import token_create
from engines.guest_io import ConsoleClosed, ConsoleStream
from engines.libvirt.engine import LibvirtEngine
from operations.models import Operation
from tests.conftest import make_staff
from tests.ws_support import WebsocketCommunicator
from ttportal.asgi import application
from vms import console
from vms.models import Vm

PROMPT = b"/ # "


class FakeConsole(ConsoleStream):
    """A serial console with a shell behind it: echoes keystrokes, runs one command."""

    opened: list[FakeConsole] = []

    def __init__(self):
        self.output: queue.Queue[bytes | None] = queue.Queue()
        self.typed = b""
        self.line = b""
        self.closed = False
        FakeConsole.opened.append(self)

    def read(self, timeout: float) -> bytes:
        try:
            data = self.output.get(timeout=timeout)
        except queue.Empty:
            return b""
        if data is None:
            raise ConsoleClosed("the VM stopped")
        return data

    def write(self, data: bytes) -> None:
        self.typed += data
        for byte in data:
            char = bytes([byte])
            if char == b"\r":
                answer = b"42\r\n" if self.line == b"echo $((6*7))" else b""
                self.output.put(b"\r\n" + answer + PROMPT)
                self.line = b""
            else:
                self.line += char
                self.output.put(char)

    def close(self) -> None:
        self.closed = True

    def end(self) -> None:
        """The VM stops: the stream ends."""
        self.output.put(None)


@pytest.fixture(autouse=True)
def fake_console(monkeypatch, settings):
    settings.TT_CONSOLE_IDLE_TIMEOUT = 60
    # Channels closes stale connections around each database call: in a test that is the
    # test's own connection, in its transaction (channels.testing patches it out the same way).
    monkeypatch.setattr("channels.db.close_old_connections", lambda: None)
    FakeConsole.opened = []
    monkeypatch.setattr(LibvirtEngine, "open_console", lambda self, vm: FakeConsole())
    monkeypatch.setattr(LibvirtEngine, "console_log", lambda self, name, limit=0: "booted\n/ # \n")
    channel_layers.backends.clear()  # a fresh in-memory layer for each test's event loop
    console._local_hubs.clear()
    console._hub_locks.clear()
    console._open_by_user.clear()
    yield
    console._local_hubs.clear()


@pytest.fixture
def vm(make_env, alice) -> Vm:
    env = make_env(alice)
    vm = env.vms.get()
    assert vm.status == Vm.Status.RUNNING
    return vm


def session_headers(user, origin: str | None = "http://testserver") -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    headers = [(b"host", b"testserver"), (b"cookie", cookie)]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return headers


def communicator(vm: Vm, headers, path: str = "ws") -> WebsocketCommunicator:
    url = f"/ws/vms/{vm.pk}/console/" if path == "ws" else f"/api/vms/{vm.pk}/console/"
    return WebsocketCommunicator(application, url, headers=headers)


async def receive_until(comm: WebsocketCommunicator, wanted: bytes, timeout: float = 5) -> bytes:
    """The console's output up to and including `wanted` (text frames skipped)."""
    seen = b""
    while wanted not in seen:
        message = await comm.receive_output(timeout)
        if message["type"] == "websocket.close":
            raise AssertionError(f"closed ({message.get('code')}) before {wanted!r}; saw {seen!r}")
        seen += message.get("bytes") or b""
    return seen


async def receive_json(comm: WebsocketCommunicator, kind: str, timeout: float = 5) -> dict:
    """The next JSON message of type `kind` (output frames skipped)."""
    while True:
        message = await comm.receive_output(timeout)
        if message["type"] == "websocket.close":
            raise AssertionError(f"closed ({message.get('code')}) before a {kind!r} message")
        if message.get("text"):
            data = json.loads(message["text"])
            if data["type"] == kind:
                return data


async def until(condition, timeout: float = 5) -> bool:
    """Whether `condition()` came true within `timeout`. The hub lets go of the stream in
    its own task, after the message a test has seen (a leave, the ended notice)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def closed_code(comm: WebsocketCommunicator, timeout: float = 5) -> int:
    while True:
        message = await comm.receive_output(timeout)
        if message["type"] == "websocket.close":
            return message.get("code", 1000)


def test_owner_types_and_sees_the_answer(vm, alice):
    h_alice = session_headers(alice)

    async def scenario():
        owner = communicator(vm, h_alice)
        connected, _ = await owner.connect()
        assert connected
        assert (await receive_json(owner, "status"))["role"] == "writer"
        await owner.send_to(text_data=json.dumps({"type": "input", "data": "echo $((6*7))\r"}))
        assert b"\r\n42\r\n" in await receive_until(owner, b"42\r\n")
        await owner.disconnect()
        # The last viewer gone, the stream is let go.
        assert await until(lambda: FakeConsole.opened[0].closed)

    async_to_sync(scenario)()
    assert FakeConsole.opened[0].typed == b"echo $((6*7))\r"


def test_a_second_viewer_watches_and_cannot_type_until_taking_control(vm, alice, olga):
    h_alice = session_headers(alice)
    h_olga = session_headers(olga)

    async def scenario():
        owner = communicator(vm, h_alice)
        await owner.connect()
        await receive_json(owner, "status")
        watcher = communicator(vm, h_olga)
        assert (await watcher.connect())[0]
        # the recent past first (the serial log's end, its prompt), then who types
        assert PROMPT in await receive_until(watcher, PROMPT)
        status = await receive_json(watcher, "status")
        assert status == {"type": "status", "role": "watcher", "writer": "alice", "viewers": 2}

        await owner.send_to(bytes_data=b"echo $((6*7))\r")
        assert b"42" in await receive_until(watcher, b"42")  # the watcher sees the output

        await watcher.send_to(bytes_data=b"reboot\r")
        refused = await receive_json(watcher, "refused")
        assert "watching" in refused["message"]

        await watcher.send_to(text_data=json.dumps({"type": "take"}))
        assert (await receive_json(watcher, "status"))["role"] == "writer"
        while (status := await receive_json(owner, "status"))["role"] != "watcher":
            assert status["viewers"] == 2  # the news of olga joining, before her take
        assert status["writer"] == "olga"
        await owner.send_to(bytes_data=b"x")
        assert "watching" in (await receive_json(owner, "refused"))["message"]
        await watcher.disconnect()
        await owner.disconnect()

    async_to_sync(scenario)()
    assert b"reboot" not in FakeConsole.opened[0].typed
    assert len(FakeConsole.opened) == 1  # one stream shared by both


def test_another_user_is_refused(vm, bob):
    h_bob = session_headers(bob)

    async def scenario():
        comm = communicator(vm, h_bob)
        assert (await comm.connect())[0]
        error = await receive_json(comm, "error")
        assert error["code"] == "forbidden"
        assert await closed_code(comm) == 4403

    async_to_sync(scenario)()
    assert not FakeConsole.opened


@pytest.mark.parametrize("origin", ["http://evil.example", "http://testserver.evil.example", "null", None])
def test_a_session_from_another_origin_is_refused_at_the_handshake(vm, alice, origin):
    h_alice_origin_origin = session_headers(alice, origin=origin)

    async def scenario():
        comm = communicator(vm, h_alice_origin_origin)
        connected, _ = await comm.connect()
        assert not connected

    async_to_sync(scenario)()
    assert not Operation.objects.filter(kind="vm_console_open").exists()


def test_no_session_is_refused_at_the_handshake(vm):
    async def scenario():
        comm = communicator(vm, [(b"host", b"testserver"), (b"origin", b"http://testserver")])
        assert not (await comm.connect())[0]

    async_to_sync(scenario)()


def test_an_api_token_opens_it_at_the_api_path_without_an_origin(vm, alice):
    _, secret = token_create(user=alice, name="cli")

    async def scenario():
        comm = communicator(vm, [(b"authorization", f"Token {secret}".encode())], path="api")
        assert (await comm.connect())[0]
        assert (await receive_json(comm, "status"))["role"] == "writer"
        await comm.send_to(bytes_data=b"echo $((6*7))\r")
        await receive_until(comm, b"42")
        await comm.disconnect()

    async_to_sync(scenario)()
    assert Operation.objects.get(kind="vm_console_open").params == {"via": "api"}


def test_the_audit_log_names_the_consoles_token_or_its_portal_session(vm, alice):
    from audit.models import AuditEvent

    token, secret = token_create(user=alice, name="cli")
    h_token = [(b"authorization", f"Token {secret}".encode()), (b"user-agent", b"tt/2.0")]
    h_alice = session_headers(alice)

    async def scenario():
        for headers, path in ((h_token, "api"), (h_alice, "ws")):
            comm = communicator(vm, headers, path=path)
            assert (await comm.connect())[0]
            await receive_json(comm, "status")
            await comm.disconnect()

    async_to_sync(scenario)()
    assert [(e.verb, e.user, e.interface, e.token_id, e.result, e.detail) for e in
            AuditEvent.objects.filter(verb="vm.console").order_by("pk")] == [
        ("vm.console", alice, "cli", str(token.public_id), "ok", {"via": "api"}),
        ("vm.console", alice, "portal", "", "ok", {"via": "portal"})]
    assert secret not in str(list(AuditEvent.objects.values()))


def test_a_bad_token_is_refused_not_taken_for_the_session(vm, alice):
    h_alice = session_headers(alice)

    async def scenario():
        headers = [*h_alice, (b"authorization", b"Token ttp_not-a-token")]
        assert not (await communicator(vm, headers, path="api").connect())[0]

    async_to_sync(scenario)()


def test_staff_need_the_console_permission(vm, stan):
    sam = make_staff("sam", "vms.console_vm")

    h_stan = session_headers(stan)
    h_sam = session_headers(sam)

    async def scenario():
        refused = communicator(vm, h_stan)
        await refused.connect()
        assert (await receive_json(refused, "error"))["code"] == "forbidden"
        allowed = communicator(vm, h_sam)
        await allowed.connect()
        assert (await receive_json(allowed, "status"))["role"] == "writer"
        await allowed.disconnect()

    async_to_sync(scenario)()


def test_a_console_nobody_types_in_closes_at_the_idle_timeout(vm, alice, settings):
    settings.TT_CONSOLE_IDLE_TIMEOUT = 0.3

    h_alice = session_headers(alice)

    async def scenario():
        comm = communicator(vm, h_alice)
        await comm.connect()
        ended = await receive_json(comm, "ended")
        assert "nobody typed" in ended["message"]
        assert await closed_code(comm) == 1000
        await comm.disconnect()  # the server's answer to the close

    async_to_sync(scenario)()
    close = Operation.objects.get(kind="vm_console_close")
    assert "nobody typed" in close.params["reason"]


def test_the_vm_stopping_ends_the_console_for_every_viewer(vm, alice, olga):
    h_alice = session_headers(alice)
    h_olga = session_headers(olga)

    async def scenario():
        owner, watcher = communicator(vm, h_alice), communicator(vm, h_olga)
        await owner.connect()
        await watcher.connect()
        await receive_json(watcher, "status")
        FakeConsole.opened[0].end()
        for comm in (owner, watcher):
            assert "ended" in (await receive_json(comm, "ended"))["message"]
        assert await until(lambda: not console._local_hubs)  # the next viewer opens a new stream

    async_to_sync(scenario)()


def test_opening_and_closing_are_recorded_with_who_and_how_long_never_the_content(vm, alice):
    h_alice = session_headers(alice)

    async def scenario():
        comm = communicator(vm, h_alice)
        await comm.connect()
        await receive_json(comm, "status")
        await comm.send_to(bytes_data=b"echo secret\r")
        await receive_until(comm, PROMPT)
        await comm.disconnect()

    async_to_sync(scenario)()
    opened = Operation.objects.get(kind="vm_console_open")
    closed = Operation.objects.get(kind="vm_console_close")
    for op in (opened, closed):
        assert (op.vm_id, op.requested_by, op.status) == (vm.pk, alice, "succeeded")
        assert "secret" not in json.dumps(op.params)
    assert opened.params == {"via": "portal"}
    assert closed.params["via"] == "portal" and closed.params["seconds"] >= 0


def test_a_stopped_vm_has_no_console(vm, alice):
    Vm.objects.filter(pk=vm.pk).update(status=Vm.Status.STOPPED)

    h_alice = session_headers(alice)

    async def scenario():
        comm = communicator(vm, h_alice)
        await comm.connect()
        error = await receive_json(comm, "error")
        assert error["code"] == "illegal_state" and "running" in error["message"]
        assert await closed_code(comm) == 4409

    async_to_sync(scenario)()


def test_one_user_has_a_bounded_number_of_consoles_open(vm, alice, settings):
    settings.TT_CONSOLE_MAX_SESSIONS = 1

    h_alice = session_headers(alice)

    async def scenario():
        first = communicator(vm, h_alice)
        await first.connect()
        await receive_json(first, "status")
        second = communicator(vm, h_alice)
        await second.connect()
        error = await receive_json(second, "error")
        assert error["code"] == "rate_limited" and "TT_CONSOLE_MAX_SESSIONS" in error["message"]
        await first.disconnect()

    async_to_sync(scenario)()


def test_the_vm_page_offers_the_console_to_whoever_may_open_it(vm, alice, client):
    client.force_login(alice)
    page = client.get(f"/vms/{vm.pk}/").content.decode()
    assert 'id="live-console"' in page and f'data-ws-path="/ws/vms/{vm.pk}/console/"' in page
    assert "vendor/xterm/xterm.js" in page  # served by the portal itself, never a CDN

    Vm.objects.filter(pk=vm.pk).update(status=Vm.Status.STOPPED)
    assert 'id="live-console"' not in client.get(f"/vms/{vm.pk}/").content.decode()


def test_the_api_path_asked_as_plain_http_says_it_is_a_websocket(vm, alice, client):
    client.force_login(alice)
    response = client.get(f"/api/vms/{vm.pk}/console/")
    assert response.status_code == 426 and response["Upgrade"] == "websocket"
    assert response.json()["code"] == "upgrade_required"


def test_with_redis_a_viewer_of_another_web_process_joins_the_same_hub(vm, alice, olga):
    """CI's Redis pass: the hub is found through Redis (the `limits` cache), not this
    process's memory, as a viewer served by another gunicorn worker would find it."""
    from channels.layers import get_channel_layer

    if not console._shared(get_channel_layer()):
        pytest.skip("several web processes share a console through Redis: tested in CI's Redis pass")
    h_alice, h_olga = session_headers(alice), session_headers(olga)

    async def scenario():
        owner = communicator(vm, h_alice)
        await owner.connect()
        await receive_json(owner, "status")
        hub = console._local_hubs.pop(vm.pk)  # as if the watcher's process had never seen it
        watcher = communicator(vm, h_olga)
        await watcher.connect()
        assert (await receive_json(watcher, "status"))["writer"] == "alice"
        await owner.send_to(bytes_data=b"echo $((6*7))\r")
        await receive_until(watcher, b"42")
        console._local_hubs[vm.pk] = hub
        await watcher.disconnect()
        await owner.disconnect()

    async_to_sync(scenario)()
    assert len(FakeConsole.opened) == 1


def test_an_engine_that_cannot_open_the_console_is_a_clear_error(vm, alice, monkeypatch):
    from engines.errors import EngineError, ErrorCode

    def refuse(self, spec):
        raise EngineError("cannot open the console of x: open elsewhere", code=ErrorCode.GUEST_CONSOLE)

    monkeypatch.setattr(LibvirtEngine, "open_console", refuse)
    h_alice = session_headers(alice)

    async def scenario():
        comm = communicator(vm, h_alice)
        await comm.connect()
        error = await receive_json(comm, "error")
        assert error["code"] == "guest_console" and "open elsewhere" in error["message"]
        assert await closed_code(comm) == 4502
        await comm.disconnect()

    async_to_sync(scenario)()
    assert "open elsewhere" in Operation.objects.get(kind="vm_console_close").params["reason"]
    assert not console._open_by_user  # its slot given back
