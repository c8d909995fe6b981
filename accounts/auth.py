"""Token authentication: knox's digest check, plus recording when a token was last used."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from knox.auth import TokenAuthentication as KnoxTokenAuthentication

from accounts.models import ApiToken
from audit import context as audit_context

# Writing on every request would make each API call a write; a minute is precise enough.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TokenAuthentication(KnoxTokenAuthentication):
    def authenticate_credentials(self, token):
        user, auth_token = super().authenticate_credentials(token)
        audit_context.set_token(auth_token.public_id)
        now = timezone.now()
        if auth_token.last_used_at is None or now - auth_token.last_used_at >= LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=auth_token.pk).update(last_used_at=now)
            auth_token.last_used_at = now
        return user, auth_token
