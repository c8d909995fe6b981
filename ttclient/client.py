"""The client: one httpx connection to a TT Portal server, authenticated by an API token.

Every call answers the API's JSON as it is (ttclient.types names its shapes) or raises
ApiError with the API's code, message and field. A long action answers its Operation;
`client.operations.wait(op)` follows it to the end.

The management cooldown (429 `cooldown`, with Retry-After) is waited out rather than
failed: the client sleeps as long as the server asks, at most `max_cooldown_wait`
seconds in all per call, and calls `on_cooldown(seconds, error)` first so a program can
say why it waits. Each POST carries an Idempotency-Key, the same on every retry, so a retry
can never start the same action twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from ttclient.errors import ApiError, ConnectionFailed
from ttclient.guest import Exec, Files, open_console
from ttclient.resources import Envs, Keys, Operations, Snapshots, Templates, Vms

DEFAULT_TIMEOUT = 30.0
PAGE_SIZE = 200  # the API's largest page
USER_AGENT = "ttclient/0.1"

# Called before a wait the server asked for: seconds to wait, and its refusal.
CooldownCallback = Callable[[float, ApiError], None]


def error_of(response: httpx.Response) -> ApiError:
    """The API's refusal as an ApiError (a body that is no JSON error still gives one)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "code" in body:
        return ApiError(response.status_code, str(body["code"]), str(body.get("message", "")),
                        str(body.get("field") or ""), body)
    text = response.text.strip()[:300]
    return ApiError(response.status_code, f"http_{response.status_code}",
                    text or f"HTTP {response.status_code} {response.reason_phrase}", "", body)


class Client:
    """A TT Portal server at `url` (e.g. "https://tt.example.org"), as the owner of `token`.

        with Client("https://tt.example.org", token) as tt:
            op = tt.envs.create("demo", [{"name": "web", "template": "tt/busybox", "ports": [80]}])
            tt.operations.wait(op)
    """

    def __init__(self, url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                 on_cooldown: CooldownCallback | None = None, max_cooldown_wait: float = 600.0,
                 transport: httpx.BaseTransport | None = None, auth: httpx.Auth | tuple | None = None):
        self.url = url.rstrip("/")
        self.token = token
        self.on_cooldown = on_cooldown
        self.max_cooldown_wait = max_cooldown_wait
        self.sleep: Callable[[float], None] = time.sleep  # how a cooldown is waited out
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Token {token}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                 transport=transport, auth=auth)
        self.envs = Envs(self)
        self.vms = Vms(self)
        self.snapshots = Snapshots(self)
        self.operations = Operations(self)
        self.keys = Keys(self)
        self.templates = Templates(self)
        self.exec = Exec(self)
        self.files = Files(self)

    # --- the one way requests go -----------------------------------------------------------

    def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                content: Any = None, headers: dict | None = None,
                timeout: httpx.Timeout | None = None) -> httpx.Response:
        """Send a request; a 2xx answer is returned, anything else raised as ApiError."""
        return self._send(method, path, json=json, params=params, content=content, headers=headers,
                          timeout=timeout)

    def _send(self, method: str, path: str, *, stream: bool = False, **kwargs) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if method == "POST":
            headers.setdefault("Idempotency-Key", f"ttclient-{uuid.uuid4()}")
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        # A body read from a stream (a file being uploaded) cannot be sent twice.
        content = kwargs.get("content")
        resendable = content is None or isinstance(content, bytes | str)
        waited = 0.0
        while True:
            try:
                request = self.http.build_request(method, path, headers=headers, **kwargs)
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"{self.url}: {exc or type(exc).__name__}") from exc
            if response.is_success:
                return response
            if stream:
                response.read()
                response.close()
            error = error_of(response)
            wait = self._cooldown_wait(response, error)
            if wait is None or not resendable or waited + wait > self.max_cooldown_wait:
                raise error
            if self.on_cooldown is not None:
                self.on_cooldown(wait, error)
            self.sleep(wait)
            waited += wait

    @staticmethod
    def _cooldown_wait(response: httpx.Response, error: ApiError) -> float | None:
        """Seconds to wait before asking again, when the answer is a 429 that says so."""
        if response.status_code != 429:
            return None
        header = response.headers.get("Retry-After", "")
        seconds = float(header) if header.replace(".", "", 1).isdigit() else error.retry_after
        return None if seconds is None else max(float(seconds), 0.0)

    def stream(self, method: str, path: str, **kwargs) -> httpx.Response:
        """A request whose answer is read as it arrives; close it (or use `with`) when done."""
        return self._send(method, path, stream=True, **kwargs)

    def get(self, path: str, /, **params) -> Any:
        return self.request("GET", path, params=params or None).json()

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        """POST a JSON body: the status (202 an Operation, 200 nothing to do) and the answer."""
        response = self.request("POST", path, json=body if body is not None else {})
        return response.status_code, (response.json() if response.content else None)

    def list(self, path: str, /, **params) -> Iterator[Any]:
        """Every item of a paged list, page after page."""
        params = {k: v for k, v in params.items() if v is not None}
        params.setdefault("page_size", PAGE_SIZE)
        page: Any = self.get(path, **params)
        while True:
            yield from page["results"]
            if not page.get("next"):
                return
            page = self.request("GET", page["next"]).json()

    # --- what is not a collection ---------------------------------------------------------------

    def quota(self) -> dict:
        """Your quotas: each limit, what you use, where the limit comes from."""
        return self.get("/api/quota/")

    def console(self, vm_id: int):
        """The VM's console as an open websocket (ttclient.guest.Console)."""
        return open_console(self, vm_id)

    # --- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def create_token(url: str, username: str, password: str, *, name: str = "tt command line",
                 expires_in: int | None = None, transport: httpx.BaseTransport | None = None) -> dict:
    """A new API token made with a password (the API takes no token to make tokens): the
    answer of POST /api/tokens/, whose `token` is the secret, shown only this once."""
    body: dict[str, Any] = {"name": name}
    if expires_in is not None:
        body["expires_in"] = expires_in
    with Client(url, auth=(username, password), transport=transport) as anonymous:
        return anonymous.request("POST", "/api/tokens/", json=body).json()
