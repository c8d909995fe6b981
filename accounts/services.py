"""Creating and revoking API tokens (the only code that changes them)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from accounts.models import ApiToken
from ttportal.errors import InvalidInput


def token_create(*, user, name: str, expires_in=None) -> tuple[ApiToken, str]:
    """A new token for `user`. Returns the row and the secret, which is never stored."""
    name = (name or "").strip() if isinstance(name, str) else name
    if not isinstance(name, str) or not name:
        raise InvalidInput("name", "must be a non-empty name")
    if len(name) > 100:
        raise InvalidInput("name", "must be at most 100 characters")
    if expires_in in (None, ""):
        expires_in = settings.TT_API_TOKEN_DEFAULT_TTL
    if isinstance(expires_in, bool) or not isinstance(expires_in, int):
        raise InvalidInput("expires_in", "must be a number of seconds")
    limit = settings.TT_API_TOKEN_MAX_TTL
    if not 60 <= expires_in <= limit:
        raise InvalidInput("expires_in", f"must be between 60 and {limit} seconds")
    return ApiToken.objects.create(user=user, expiry=timedelta(seconds=expires_in), name=name)


def token_revoke(*, token: ApiToken, by) -> None:
    """Revoke at once: the row goes, so the secret no longer authenticates."""
    if by is None or token.user_id != by.pk:
        from ttportal.errors import Forbidden

        raise Forbidden("you can only revoke your own tokens")
    ApiToken.objects.filter(pk=token.pk).delete()
