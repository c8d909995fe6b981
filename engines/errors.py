"""The stable error codes and the one exception type the engines raise.

Plain Python on purpose: drivers never import Django (ttportal.errors re-exports
these for the control plane and adds the request-side refusals).

Each code is a name clients branch on (the seed's ERR_TT_* set, plus the
control plane's own); operations record it, the API returns it, and its label
is what people read.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator


class ErrorCode(enum.StrEnum):
    """A stable error code (`value`) with a label for people (`label`)."""

    def __new__(cls, value: str, label: str):
        member = str.__new__(cls, value)
        member._value_ = value
        member.label = label
        return member

    # Refusals of a request (nothing was changed).
    INVALID = "invalid", "Invalid input"
    FORBIDDEN = "forbidden", "Not allowed"
    NOT_FOUND = "not_found", "Not found"
    COOLDOWN = "cooldown", "Management cooldown active"
    ILLEGAL_STATE = "illegal_state", "Illegal state for this action"
    UNSUPPORTED = "unsupported_feature", "Engine lacks a feature"
    EXHAUSTED = "resources_exhausted", "No free address or port"
    NO_CAPACITY = "no_capacity", "No node has room for it"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused", "Idempotency key used for another request"
    # Engine failures (the seed's ERR_TT_* codes).
    STORAGE_CREATE_IMAGE = "storage_create_image", "Creating the runtime image failed"
    STORAGE_DESTROY_IMAGE = "storage_destroy_image", "Destroying the runtime image failed"
    FIREWALL_SET_NET = "net_set", "Setting up the network failed"
    FIREWALL_UNSET_NET = "net_unset", "Removing the network failed"
    NET_OUTGOING = "net_outgoing", "Changing egress rules failed"
    NET_BLACKLIST = "net_blacklist", "Changing the blacklist failed"
    DEFINE_VM = "define_vm", "Defining the VM failed"
    UNDEFINE_VM = "undefine_vm", "Removing the VM definition failed"
    START_VM = "start_vm", "Starting the VM failed"
    STOP_VM = "stop_vm", "Stopping the VM failed"
    SUSPEND_VM = "suspend_vm", "Suspending the VM failed"
    UPDATE_VM = "update_vm", "Updating the VM failed"
    META_CREATE_CACHE = "meta_create_cache", "Caching the VM config failed"
    META_RESTORE_CACHE = "meta_restore_cache", "Restoring the VM config failed"
    SNAPSHOT_CREATE = "snapshot_create", "Creating the snapshot failed"
    SNAPSHOT_DESTROY = "snapshot_destroy", "Destroying the snapshot failed"
    SNAPSHOT_APPLY = "snapshot_apply", "Applying the snapshot failed"
    ENGINE_INIT = "engine_init", "Engine initialisation failed"
    SYS_IO = "sys_io", "I/O error"
    GUEST_EXEC = "guest_exec", "Running the command in the guest failed"
    GUEST_FILES = "guest_files", "Copying a file to or from the guest failed"
    GUEST_CONSOLE = "guest_console", "The guest's console failed or closed"
    # The control plane's own.
    DRIFT = "drift", "The node does not run what the database says"
    WORKER_LOST = "worker_lost", "The worker running it was lost, every attempt"
    NODE_DOWN = "node_down", "Its node's task cluster stopped beating"
    DISK_EXCEEDED = "disk_exceeded", "Stopped: it wrote more than its disk size"
    TIMEOUT = "timeout", "It ran past the task time limit"
    CANCELLED = "cancelled", "An operator ended it"
    INTERNAL = "internal", "Internal error"

    @classmethod
    def choices(cls) -> list[tuple[str, str]]:
        """(value, label) pairs, for a model field's `choices`."""
        return [(member.value, member.label) for member in cls]


class TTError(Exception):
    """Base error: a stable code, a human message, and optionally the field at fault."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = ErrorCode(code)  # a bare string that is no code fails here, loudly
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def as_dict(self) -> dict:
        data = {"code": str(self.code), "message": self.message}
        if self.field:
            data["field"] = self.field
        return data


class EngineError(TTError):
    """A driver call failed; `code` says which step (storage_create_image, start_vm…)."""


@contextlib.contextmanager
def fails_as(code: ErrorCode) -> Iterator[None]:
    """Turn any failure inside into an EngineError carrying `code`: how the seed (docs/seed.md)
    tags each step of a flow with its error code, `.c(e!(CODE))`.

    The one way a failure gets its code: drivers raise plain exceptions and the
    flow around them says which step failed. A TTError raised inside already
    has its code and passes through unchanged.
    """
    try:
        yield
    except TTError:
        raise
    except Exception as exc:
        raise EngineError(f"{exc.__class__.__name__}: {exc}", code=code) from exc
