"""A client of one Firecracker process's HTTP API, over its unix socket (standard library only).

Every body goes through engines.firecracker.schemas first: the driver cannot send
what the contract refuses. An answer other than 2xx becomes FirecrackerApiError
carrying Firecracker's own `fault_message`.
"""

from __future__ import annotations

import http.client
import json
import socket

from engines.firecracker import schemas


class FirecrackerApiError(RuntimeError):
    """Firecracker refused a call (or answered nothing usable)."""

    def __init__(self, method: str, path: str, status: int, fault_message: str):
        self.method, self.path, self.status, self.fault_message = method, path, status, fault_message
        super().__init__(f"{method} {path} answered {status}: {fault_message}")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


# Writing (or mapping) all of a guest's memory is the slowest answer Firecracker gives.
SLOW_CALLS = {"/snapshot/create", "/snapshot/load"}
SLOW_TIMEOUT = 600.0


class FirecrackerApi:
    def __init__(self, socket_path: str, *, timeout: float = 30.0):
        self.socket_path = socket_path
        self.timeout = timeout

    def put(self, path_template: str, body: dict, **path_params: str) -> None:
        self._send("PUT", path_template, body, path_params)

    def patch(self, path_template: str, body: dict, **path_params: str) -> None:
        self._send("PATCH", path_template, body, path_params)

    def get(self, path: str, *, timeout: float | None = None) -> dict:
        return self._request("GET", path, None, timeout) or {}

    def _send(self, method: str, path_template: str, body: dict, path_params: dict[str, str]) -> None:
        schemas.body_for(method, path_template, body)
        timeout = SLOW_TIMEOUT if path_template in SLOW_CALLS else None
        self._request(method, path_template.format(**path_params), body, timeout)

    def _request(self, method: str, path: str, body: dict | None, timeout: float | None) -> dict | None:
        conn = _UnixConnection(self.socket_path, self.timeout if timeout is None else timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Accept": "application/json"}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if 200 <= response.status < 300:
            return json.loads(data) if data else None
        raise FirecrackerApiError(method, path, response.status, _fault_message(data))


def _fault_message(data: bytes) -> str:
    try:
        answer = json.loads(data)
    except ValueError:
        return data.decode(errors="replace").strip() or "(no body)"
    if isinstance(answer, dict) and isinstance(answer.get("fault_message"), str):
        return answer["fault_message"]
    return json.dumps(answer)
