"""One error type for everything a service or an engine can refuse or fail at.

The codes and the base types live with the engines (engines/errors.py, plain
Python, so drivers never import Django); this module re-exports them and adds
the refusals only a request can meet. Each error carries a stable `code` that
operations record and the API returns, so clients can branch on it while the
message stays free for humans.
"""

from __future__ import annotations

from engines.errors import EngineError, ErrorCode, TTError, fails_as

__all__ = [
    "DATABASE_BUSY",
    "QUOTA_EXCEEDED",
    "RATE_LIMITED",
    "TOO_LARGE",
    "ConflictingInput",
    "CooldownActive",
    "DatabaseBusy",
    "EngineError",
    "ErrorCode",
    "Exhausted",
    "Forbidden",
    "IdempotencyKeyReused",
    "IllegalState",
    "InvalidInput",
    "NoCapacity",
    "NodeDown",
    "NotFound",
    "QuotaExceeded",
    "RateLimited",
    "TTError",
    "TooLarge",
    "Unsupported",
    "fails_as",
]

# The code of a quota refusal. Request-side only (a refusal records no operation), so it
# is kept here rather than in engines.errors.ErrorCode, which Operation.error_code's
# choices are made from.
QUOTA_EXCEEDED = "quota_exceeded"
# The code of a refusal by a rate limit or a cap on activity (ttportal/ratelimit.py), and of a
# login locked out after too many failures (accounts/lockout.py). Request-side only, likewise.
RATE_LIMITED = "rate_limited"
# A request body past a limit on its size (a file copied into a guest: TT_FILE_MAX_MB): request-side.
TOO_LARGE = "too_large"
# The database could not take the request in time (ttportal/busy.py); likewise request-side.
DATABASE_BUSY = "database_busy"


class InvalidInput(TTError):
    """Bad input: names the field and the rule it breaks."""

    code = ErrorCode.INVALID

    def __init__(self, field: str, rule: str):
        super().__init__(rule, field=field)


class ConflictingInput(InvalidInput):
    """Well-formed input that a rule a schema cannot state refuses: one depending on the
    server's data or clock (a template that does not exist, a name already taken, an end
    already past, fewer vCPUs than the template needs), on two fields together, or on what
    an encoded value holds (an SSH key's data). The API answers 422 (a schema can state the
    other rules, and their breach is a 400); everywhere else it is bad input like any other."""


class Forbidden(TTError):
    code = ErrorCode.FORBIDDEN


class NotFound(TTError):
    code = ErrorCode.NOT_FOUND


class IllegalState(TTError):
    code = ErrorCode.ILLEGAL_STATE


class Waking(IllegalState):
    """What was asked needs a running VM, and its Env sleeps (envs/sleep.py): it is being
    woken now. A 409 with Retry-After: the same request succeeds once the wake has run."""

    def __init__(self, message: str, *, retry_after: int = 3):
        super().__init__(f"{message}; retry in {retry_after} s")
        self.retry_after = retry_after

    def as_dict(self) -> dict:
        return {**super().as_dict(), "retry_after": self.retry_after}


class Unsupported(TTError):
    code = ErrorCode.UNSUPPORTED


class Exhausted(TTError):
    """Allocation lost the last free address or port of a node (a race placement could
    not see)."""

    code = ErrorCode.EXHAUSTED


class NoCapacity(TTError):
    """Placement (vms/placement.py) found no node with room for a new VM: the message
    says which filter removed which node. Nothing was created."""

    code = ErrorCode.NO_CAPACITY


class NodeDown(TTError):
    """The VM's node is down (its task cluster stopped beating, nodes/fleet.py): nothing
    can be done to it until the node beats again. Nothing was changed."""

    code = ErrorCode.NODE_DOWN


class IdempotencyKeyReused(TTError):
    """The Idempotency-Key of an earlier, different request (IETF Idempotency-Key draft)."""

    code = ErrorCode.IDEMPOTENCY_KEY_REUSED

    def __init__(self):
        super().__init__(
            "this Idempotency-Key was used for a different request; use a new key for a new request",
            field="Idempotency-Key",
        )


class CooldownActive(TTError):
    code = ErrorCode.COOLDOWN

    def __init__(self, retry_after: int):
        super().__init__(
            f"another management operation ran on this Env recently; retry in {retry_after} s"
        )
        self.retry_after = retry_after


class QuotaExceeded(TTError):
    """A request that would take its owner past one of their quotas (accounts/quotas.py).
    Nothing was changed. Besides the message it names the quota, its limit, what is in
    use and what the request would add (refused because used + requested > limit), which
    the API returns as fields of the error body."""

    code = QUOTA_EXCEEDED  # type: ignore[assignment]

    def __init__(self, message: str, *, quota: str, limit: int, used: int, requested: int):
        super().__init__(message)
        self.quota = quota
        self.limit = limit
        self.used = used
        self.requested = requested

    def as_dict(self) -> dict:
        return {**super().as_dict(), "quota": self.quota, "limit": self.limit, "used": self.used,
                "requested": self.requested}


class RateLimited(TTError):
    """A request past one of the limits on how much one user may do (ttportal/ratelimit.py)
    or on failed logins (accounts/lockout.py). Nothing was changed. It names the limit
    (`limit_name`: extend, peer, token_create, live_tokens, test_notification,
    queued_operations, exec, files, concurrent_execs, login_failures), what it allows
    (`limit` per `period` seconds, or at once when there is no period) and when to retry
    (`retry_after`, seconds): the API answers 429 with a Retry-After header, the portal says
    it in its message."""

    code = RATE_LIMITED  # type: ignore[assignment]

    def __init__(self, message: str, *, limit_name: str, limit: int, retry_after: int,
                 period: int | None = None):
        super().__init__(message)
        self.limit_name = limit_name
        self.limit = limit
        self.period = period
        self.retry_after = max(1, int(retry_after))

    def as_dict(self) -> dict:
        body = {**super().as_dict(), "limit_name": self.limit_name, "limit": self.limit,
                "retry_after": self.retry_after}
        if self.period is not None:
            body["period"] = self.period
        return body


class DatabaseBusy(TTError):
    """The database was too busy to take the request in time: a lock another transaction
    held did not come free within the wait allowed (SQLite's busy timeout, PostgreSQL's
    lock_timeout), or PostgreSQL aborted the transaction to break a deadlock or a
    serialization conflict. Nothing was changed (the transaction rolled back) and the same
    request may simply be sent again: answered 503 with Retry-After (ttportal/busy.py)."""

    code = DATABASE_BUSY  # type: ignore[assignment]

    def __init__(self, retry_after: int):
        super().__init__(f"the database is busy; nothing was changed, retry in {retry_after} s")
        self.retry_after = retry_after

    def as_dict(self) -> dict:
        return {**super().as_dict(), "retry_after": self.retry_after}


class TooLarge(TTError):
    """A body past a limit on its size (a file copied to or from a guest, TT_FILE_MAX_MB):
    the API's 413. It names the field (`body`, or the upload's form field) and the limit in
    bytes. Nothing reached the guest."""

    code = TOO_LARGE  # type: ignore[assignment]

    def __init__(self, message: str, *, field: str, limit: int):
        super().__init__(message, field=field)
        self.limit = limit

    def as_dict(self) -> dict:
        return {**super().as_dict(), "limit": self.limit}
