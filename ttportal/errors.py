"""One error type for everything a service or an engine can refuse or fail at.

The codes and the base types live with the engines (engines/errors.py, plain
Python, so drivers never import Django); this module re-exports them and adds
the refusals only a request can meet. Each error carries a stable `code` that
operations record and the API returns, so clients can branch on it while the
message stays free for humans.
"""

from __future__ import annotations

from engines.errors import EngineError, ErrorCode, TTError, step

__all__ = [
    "CooldownActive", "EngineError", "ErrorCode", "Exhausted", "Forbidden", "IllegalState",
    "InvalidInput", "NotFound", "TTError", "Unsupported", "step",
]


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
