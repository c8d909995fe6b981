"""The channels a notification goes out through: email.py and webhook.py. Each sends one
attempt and says how it went; notifications.services records it and decides on retries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """One attempt's result: delivered, or an error that another attempt may (`retry`)
    or may not cure. `status` is a webhook's HTTP status; `retry_after` its Retry-After."""

    delivered: bool
    retry: bool = False
    error: str = ""
    status: int | None = None
    retry_after: int | None = None
