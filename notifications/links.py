"""The "extend by 1 h" link of an expiry warning: a signed token naming the warning.

The token is the capability: whoever holds it may extend that Env by one hour, once,
before the end the warning was about, without signing in (it was sent only to the
Env's owner, by their email or their webhook). What it can do is small on purpose:
never more than one hour, never past the Env's longest lifetime, never twice. Opening
it (GET) only shows a confirmation page; the extension is its form's POST (with the
CSRF check), so link scanners and previews change nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.core import signing

SALT = "tt.notifications.extend"


class LinkRefused(Exception):
    """Why the link does nothing: 400 for a token that is not ours (tampered, cut short),
    410 for one that was ours (used, expired, its Env gone)."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def make(notification_id: int, until: datetime) -> str:
    return signing.dumps({"n": notification_id, "until": int(until.timestamp())}, salt=SALT)


def read(token: str, now: datetime) -> int:
    """The notification id the token names, once checked: signed by us, not expired."""
    try:
        data = signing.loads(token, salt=SALT)
        notification_id, until = int(data["n"]), int(data["until"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise LinkRefused(400, "This link is not valid",
                          "It was changed or cut short. Open the link exactly as the notification gave it, "
                          "or extend the Env from its page.") from None
    if now.timestamp() >= until:
        raise LinkRefused(410, "This link has expired",
                          f"It worked until the Env's end it was sent for "
                          f"({datetime.fromtimestamp(until, UTC):%Y-%m-%d %H:%M} UTC).")
    return notification_id
