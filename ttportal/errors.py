"""One error type for everything a service or an engine can refuse or fail at.

Each error carries a stable `code` (the seed's ERR_TT_* set, as names) that
operations record and the API returns, so clients can branch on it while the
message stays free for humans.
"""

from __future__ import annotations

from django.db import models


class ErrorCode(models.TextChoices):
    # Refusals of a request (nothing was changed).
    INVALID = "invalid", "Invalid input"
    FORBIDDEN = "forbidden", "Not allowed"
    NOT_FOUND = "not_found", "Not found"
    COOLDOWN = "cooldown", "Management cooldown active"
    ILLEGAL_STATE = "illegal_state", "Illegal state for this action"
    UNSUPPORTED = "unsupported_feature", "Engine lacks a feature"
    EXHAUSTED = "resources_exhausted", "No free address or port"
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
    UPDATE_VM = "update_vm", "Updating the VM failed"
    META_CREATE_CACHE = "meta_create_cache", "Caching the VM config failed"
    META_RESTORE_CACHE = "meta_restore_cache", "Restoring the VM config failed"
    SNAPSHOT_CREATE = "snapshot_create", "Creating the snapshot failed"
    SNAPSHOT_DESTROY = "snapshot_destroy", "Destroying the snapshot failed"
    SNAPSHOT_APPLY = "snapshot_apply", "Applying the snapshot failed"
    ENGINE_INIT = "engine_init", "Engine initialisation failed"
    SYS_IO = "sys_io", "I/O error"
    DRIFT = "drift", "The node does not run what the database says"
    INTERNAL = "internal", "Internal error"


class TTError(Exception):
    """Base error: a stable code, a human message, and optionally the field at fault."""

    code: str = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def as_dict(self) -> dict:
        data = {"code": str(self.code), "message": self.message}
        if self.field:
            data["field"] = self.field
        return data


class InvalidInput(TTError):
    """Bad input: names the field and the rule it breaks."""

    code = ErrorCode.INVALID

    def __init__(self, field: str, rule: str):
        super().__init__(rule, field=field)


class Forbidden(TTError):
    code = ErrorCode.FORBIDDEN


class NotFound(TTError):
    code = ErrorCode.NOT_FOUND


class IllegalState(TTError):
    code = ErrorCode.ILLEGAL_STATE


class Unsupported(TTError):
    code = ErrorCode.UNSUPPORTED


class Exhausted(TTError):
    code = ErrorCode.EXHAUSTED


class CooldownActive(TTError):
    code = ErrorCode.COOLDOWN

    def __init__(self, retry_after: int):
        super().__init__(
            f"another management operation ran on this Env recently; retry in {retry_after} s"
        )
        self.retry_after = retry_after


class EngineError(TTError):
    """A driver call failed; `code` says which step (storage_create_image, start_vm…)."""
