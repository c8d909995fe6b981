"""API tokens on websockets: `Authorization: Token ...` (knox, accounts/auth.py), as on the
REST API, for clients that are not a browser (a browser cannot set that header on a
websocket; the portal's websockets ride its session instead)."""

from __future__ import annotations

from channels.db import database_sync_to_async
from rest_framework import exceptions

from accounts.auth import TokenAuthentication


@database_sync_to_async
def _user_of(token: bytes):
    """(the token's user, its public id), or (None, "") when the token is unknown, expired or
    its user inactive."""
    try:
        user, auth_token = TokenAuthentication().authenticate_credentials(token)
    except exceptions.AuthenticationFailed:
        return None, ""
    return user, str(auth_token.public_id)


class TokenAuthMiddleware:
    """Puts a token's user in scope["user"], its public id in scope["token_id"] (for the audit
    log, as the API's token authentication does) and marks scope["auth_via"] = "token"; a
    request with a bad token is left with no user (refused by the consumer), never its session's."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() == b"token" and token.strip():
            from django.contrib.auth.models import AnonymousUser

            user, token_id = await _user_of(token.strip())
            scope = dict(scope, user=user or AnonymousUser(), auth_via="token", token_id=token_id)
        else:
            scope = dict(scope, auth_via="session")
        return await self.inner(scope, receive, send)
