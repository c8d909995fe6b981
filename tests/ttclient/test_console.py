"""The console client against a real websocket server (websockets' own, in a thread): the
token goes in the Authorization header, bytes go both ways, and a refusal before the
upgrade is the API's error."""

from __future__ import annotations

import http
import json
import threading

import pytest
from websockets.sync.server import serve

from ttclient import ApiError, Client


@pytest.fixture
def console_server():
    seen = {}

    def refuse_vm_9(connection, request):
        seen["authorization"] = request.headers.get("Authorization")
        seen["path"] = request.path
        if request.path == "/api/vms/9/console/":
            body = json.dumps({"code": "unsupported_feature", "message": "the docker engine lacks console"})
            response = connection.respond(http.HTTPStatus.UNPROCESSABLE_ENTITY, body)
            response.headers["Content-Type"] = "application/json"
            return response
        return None

    def echo(connection):
        connection.send(b"login: ")
        for message in connection:
            connection.send(b"echo:" + message)

    with serve(echo, "127.0.0.1", 0, process_request=refuse_vm_9) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.socket.getsockname()[1]}", seen
        server.shutdown()


def test_the_console_carries_the_token_and_bytes_both_ways(console_server):
    url, seen = console_server
    with Client(url, "ttp_secret") as tt, tt.console(5) as console:
        assert console.recv(timeout=5) == b"login: "
        console.send(b"root\n")
        assert console.recv(timeout=5) == b"echo:root\n"
        assert console.recv(timeout=0.05) == b""  # nothing more: not the end
    assert seen == {"authorization": "Token ttp_secret", "path": "/api/vms/5/console/"}


def test_a_refused_console_is_the_apis_error(console_server):
    url, _ = console_server
    with Client(url, "ttp_secret") as tt, pytest.raises(ApiError) as refused:
        tt.console(9)
    assert refused.value.status == 422 and refused.value.unsupported
    assert refused.value.message == "the docker engine lacks console"
