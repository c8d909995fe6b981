"""Exit codes and how failures are shown: the API's message with the field named.

    0  ok
    1  refused or failed (the API said no, an operation failed, the server is unreachable)
    2  usage (a bad option or argument, a file that is no Env file is 1: the file was read)
    3  timeout (--timeout passed, or a command in the guest ran past its own timeout)

`tt exec` and `tt ssh` exit with the command's own exit code once it ran.
"""

from __future__ import annotations

import json
import sys

import typer
from typer.core import TyperGroup

OK, FAILED, USAGE, TIMEOUT = 0, 1, 2, 3


class Mode:
    """How this run prints: set by each command's --json (ttcli.output.json_mode), read when a
    failure is reported. Reset at the start of every run (tests run many in one process)."""

    json = False


class Failure(Exception):
    """A failure of the command line itself (not the API's): a message and an exit code."""

    def __init__(self, message: str, code: int = FAILED, *, field: str = "", data: dict | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field
        self.data = data


def describe(exc: BaseException) -> tuple[int, dict]:
    """The exit code and the JSON shape of a failure (code, message, field when there is one)."""
    from ttclient.errors import ApiError, ConnectionFailed, NotLoggedIn, OperationFailed, WaitTimeout

    if isinstance(exc, Failure):
        body = exc.data or {"code": "cli", "message": exc.message}
        if exc.field:
            body.setdefault("field", exc.field)
        return exc.code, body
    if isinstance(exc, ApiError):
        body = dict(exc.body) if isinstance(exc.body, dict) else {}
        body.update(code=exc.code, message=exc.message, status=exc.status)
        if exc.status == 401:  # the stored token expired or was revoked
            body["message"] = f"{exc.message} (log in again: tt login URL, or set TT_TOKEN)"
        if exc.field:
            body["field"] = exc.field
        return FAILED, body
    if isinstance(exc, OperationFailed):
        op = exc.operation
        return FAILED, {"code": exc.code, "message": exc.message, "operation": op.get("id"),
                        "kind": op.get("kind")}
    if isinstance(exc, WaitTimeout):
        return TIMEOUT, {"code": "timeout", "message": str(exc)}
    if isinstance(exc, NotLoggedIn):
        return FAILED, {"code": "not_logged_in", "message": str(exc)}
    if isinstance(exc, ConnectionFailed):
        return FAILED, {"code": "connection_failed", "message": f"no answer from {exc}"}
    return FAILED, {"code": "error", "message": str(exc)}


def human(body: dict) -> str:
    """One line for people: `field: message`, as the API names the field."""
    message = body.get("message") or body.get("code", "failed")
    field = body.get("field")
    text = f"{field}: {message}" if field and not str(message).startswith(f"{field}:") else str(message)
    if body.get("code") == "unsupported_feature":
        text = f"not available on this VM: {text}"
    return text


def report(exc: BaseException, as_json: bool) -> int:
    code, body = describe(exc)
    if as_json:
        sys.stderr.write(json.dumps({"error": body}, indent=2) + "\n")
    else:
        sys.stderr.write(f"tt: {human(body)}\n")
        for field, messages in (body.get("errors") or {}).items():
            if field != body.get("field"):
                for message in messages:
                    sys.stderr.write(f"tt: {field}: {message}\n")
    return code


class Group(TyperGroup):
    """The root group: a command's failure becomes its message on stderr and the exit code
    above (never a traceback), whichever way the command was run (tt, python -m ttcli, a
    test's CliRunner)."""

    def invoke(self, ctx):
        from ttclient.errors import TTClientError

        Mode.json = False
        try:
            return super().invoke(ctx)
        except (Failure, TTClientError) as exc:
            raise typer.Exit(report(exc, Mode.json)) from None
        except KeyboardInterrupt:
            sys.stderr.write("\ntt: interrupted\n")
            raise typer.Exit(130) from None
