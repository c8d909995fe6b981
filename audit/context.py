"""Where an action comes from: a request (the portal, the API, the admin, the `tt` command)
or the system (a schedule, a task), held in a context variable for the request's or the
task's time, so the services record it without being handed it.

The middleware (`AuditContext`) sets it for every HTTP request; the API's token
authentication adds the token's public id (`set_token`), and so does the console's
websocket over a token (`origin_of_scope`); schedules and tasks run inside
`system(name)`. Outside all of these (a shell, a management command) the interface is
`system` with no name.
"""

from __future__ import annotations

import contextlib
import dataclasses
from contextvars import ContextVar

# Interfaces, as recorded.
API, PORTAL, ADMIN, CLI, SCHEDULE, SYSTEM = "api", "portal", "admin", "cli", "schedule", "system"
INTERFACES = (API, PORTAL, ADMIN, CLI, SCHEDULE, SYSTEM)

# The `tt` command (and the ttclient library it is built on) sends a User-Agent starting with
# one of these: its API calls are the CLI's.
CLI_AGENT_PREFIXES = ("tt/", "ttclient/")
USER_AGENT_MAX = 300


@dataclasses.dataclass
class Origin:
    interface: str = SYSTEM
    address: str | None = None
    user_agent: str = ""
    token_id: str = ""
    system: str = ""  # the schedule's or task's name when the system acts
    # Set while an audited service runs: a service it calls records nothing of its own
    # (one event per action: a blueprint launch is not also an env_create).
    depth: int = 0


_ORIGIN: ContextVar[Origin | None] = ContextVar("tt_audit_origin", default=None)


def current() -> Origin:
    origin = _ORIGIN.get()
    if origin is None:
        origin = Origin()
        _ORIGIN.set(origin)
    return origin


@contextlib.contextmanager
def using(origin: Origin):
    token = _ORIGIN.set(origin)
    try:
        yield origin
    finally:
        _ORIGIN.reset(token)


def system(name: str, interface: str = SCHEDULE):
    """What runs inside is done by the system: a schedule (`tt: expiry`), a task."""
    return using(Origin(interface=interface, system=name[:100]))


def set_token(public_id) -> None:
    """The API token this request authenticated with (its public id, never its secret)."""
    current().token_id = str(public_id)


def interface_of(path: str, user_agent: str) -> str:
    if path.startswith("/admin/"):
        return ADMIN
    if path.startswith("/api/"):
        return CLI if user_agent.startswith(CLI_AGENT_PREFIXES) else API
    return PORTAL


def origin_of(request) -> Origin:
    agent = request.META.get("HTTP_USER_AGENT", "")[:USER_AGENT_MAX]
    return Origin(interface=interface_of(request.path, agent),
                  address=request.META.get("REMOTE_ADDR") or None, user_agent=agent)


class AuditContext:
    """Middleware: the request's origin for whatever it records."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with using(origin_of(request)):
            return self.get_response(request)


def origin_of_scope(scope, via: str) -> Origin:
    """A websocket's origin (the console): its client's address, user agent and the public id
    of the API token it signed in with (accounts/ws_auth.py puts it in scope["token_id"]);
    `via` is the console's own word for how it signed in (`api`: a token, else the portal)."""
    headers = dict(scope.get("headers") or [])
    agent = headers.get(b"user-agent", b"").decode("latin-1")[:USER_AGENT_MAX]
    client = scope.get("client") or (None,)
    interface = (CLI if agent.startswith(CLI_AGENT_PREFIXES) else API) if via == API else PORTAL
    return Origin(interface=interface, address=client[0], user_agent=agent,
                  token_id=str(scope.get("token_id") or "") if via == API else "")
