"""What can go wrong talking to TT Portal, each a subclass of TTClientError.

The API answers every refusal with JSON carrying a stable `code`, a `message` for people and,
when one field is at fault, its `field` (e.g. `vms[0].template`): ApiError keeps all three,
so a program branches on the code and shows the message."""

from __future__ import annotations

from typing import Any


class TTClientError(Exception):
    """Anything the client raises on purpose."""


class ApiError(TTClientError):
    """The API refused or failed a request: its HTTP status, `code`, `message`, `field`."""

    def __init__(self, status: int, code: str, message: str, field: str = "", body: Any = None):
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.body = body if body is not None else {"code": code, "message": message}
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    @property
    def retry_after(self) -> int | None:
        """Seconds the server asks to wait (429 cooldown, rate limits), when it says."""
        value = self.body.get("retry_after") if isinstance(self.body, dict) else None
        return value if isinstance(value, int) else None

    @property
    def unsupported(self) -> bool:
        """The engine or template lacks the feature asked for (exec, files, console)."""
        return self.code == "unsupported_feature"


class NotLoggedIn(TTClientError):
    """No server or token is known (neither given, nor stored by `tt login`)."""


class ConnectionFailed(TTClientError):
    """The server did not answer (refused, unreachable, TLS): no request was processed or
    the answer was lost."""


class OperationFailed(TTClientError):
    """A long action ran and failed: the operation's error code and message."""

    def __init__(self, operation: dict):
        self.operation = operation
        self.code = operation.get("error_code") or "failed"
        self.message = operation.get("error_message") or f"operation {operation.get('id')} failed"
        super().__init__(f"{operation.get('kind', 'operation')} {operation.get('id')} failed: {self.message}")


class WaitTimeout(TTClientError):
    """Waiting gave up: the operation (or the condition waited for) was not done in time.
    The work itself goes on on the server."""
