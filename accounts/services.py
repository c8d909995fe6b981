"""Creating and revoking API tokens, adding and deleting SSH keys (the only code that
changes them)."""

from __future__ import annotations

import math
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Min
from django.utils import timezone

from accounts import sshkeys
from accounts.models import ApiToken, SshKey
from audit.recording import audited
from ttportal import limits, ratelimit
from ttportal.errors import ConflictingInput, Forbidden, InvalidInput, RateLimited


@audited("token.create")
def token_create(*, user, name: str, expires_in=None) -> tuple[ApiToken, str]:
    """A new token for `user`. Returns the row and the secret, which is never stored.
    Bound by how many live tokens one may hold (TT_MAX_TOKENS_PER_USER) and how often one
    may make them (TT_RATE_TOKEN_CREATE)."""
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
    with transaction.atomic():
        # The user's row, locked: concurrent creates of one user count their live tokens in turn.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        _check_live_tokens(user)
        ratelimit.take("token_create", user=user)
        return ApiToken.objects.create(user=user, expiry=timedelta(seconds=expires_in), name=name)


def _check_live_tokens(user) -> None:
    """At most TT_MAX_TOKENS_PER_USER unexpired tokens: refused until one is revoked, or
    until the first of them expires (Retry-After)."""
    most = settings.TT_MAX_TOKENS_PER_USER
    if not most:
        return
    now = timezone.now()
    live = ApiToken.objects.filter(user=user).unexpired()
    if live.count() < most:
        return
    first_expiry = live.aggregate(first=Min("expiry"))["first"]
    wait = math.ceil((first_expiry - now).total_seconds()) if first_expiry else 60
    raise RateLimited(
        f"you have {most} live API tokens, the most one may hold: revoke one (or wait {wait} s, "
        "until the first expires)",
        limit_name="live_tokens", limit=most, retry_after=wait,
    )


@audited("token.revoke")
def token_revoke(*, token: ApiToken, by) -> None:
    """Revoke at once: the row goes, so the secret no longer authenticates."""
    if by is None or token.user_id != by.pk:
        raise Forbidden("you can only revoke your own tokens")
    ApiToken.objects.filter(pk=token.pk).delete()


@audited("sshkey.add")
def ssh_key_add(*, user, public_key, name=None) -> SshKey:
    """Keep a public key of `user`'s, for the `tt` user of the VMs made after it.

    `name` defaults to the key's comment, else to its fingerprint. A key already kept,
    a name already used or one key too many is refused on the field at fault."""
    try:
        parsed = sshkeys.parse(public_key)
    except sshkeys.KeyRefused as exc:
        refusal = InvalidInput if exc.malformed else ConflictingInput
        raise refusal("public_key", str(exc)) from None
    if name in (None, ""):
        name = parsed.comment[: limits.TOKEN_NAME_MAX] or parsed.fingerprint[:limits.TOKEN_NAME_MAX]
    if not limits.matches(limits.TOKEN_NAME_PATTERN, name) or len(name) > limits.TOKEN_NAME_MAX:
        raise InvalidInput("name", limits.TOKEN_NAME_RULE)
    with transaction.atomic():
        # The user's row, locked: concurrent adds of one user count and check names in turn.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        mine = SshKey.objects.filter(user=user)
        same = mine.filter(fingerprint=parsed.fingerprint).first()
        if same is not None:
            raise ConflictingInput("public_key", f"you already have this key, named {same.name!r}")
        if mine.filter(name=name).exists():
            raise ConflictingInput("name", f"you already have a key named {name!r}")
        if mine.count() >= limits.SSH_KEYS_MAX:
            raise ConflictingInput("public_key", f"you have {limits.SSH_KEYS_MAX} keys, the most one keeps")
        try:
            with transaction.atomic():
                return SshKey.objects.create(
                    user=user, name=name, key_type=parsed.type, public_key=parsed.key,
                    comment=parsed.comment, bits=parsed.bits, fingerprint=parsed.fingerprint,
                )
        except IntegrityError:  # a concurrent add of the same key or name (where rows are not locked)
            raise ConflictingInput("public_key", "you already have this key or a key of this name") from None


@audited("sshkey.delete")
def ssh_key_delete(*, key: SshKey, by) -> None:
    """Forget a key: VMs made from now on no longer get it (running ones keep what they have)."""
    if by is None or key.user_id != by.pk:
        raise Forbidden("you can only delete your own keys")
    SshKey.objects.filter(pk=key.pk).delete()
