"""API tokens: knox's hashed token (digest, owner, created, expiry) plus what
people need to manage several of them: a name, a public id, the last use.
SSH public keys. Quota overrides per user and per group (accounts/quotas.py)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from knox.models import AbstractAuthToken, AuthTokenManager


class ApiTokenQuerySet(models.QuerySet):
    def visible_to(self, user) -> ApiTokenQuerySet:
        # Tokens are personal: staff manage only their own here (the admin can revoke any).
        return self.filter(user=user)

    def unexpired(self, now=None) -> ApiTokenQuerySet:
        now = now or timezone.now()
        return self.filter(models.Q(expiry__isnull=True) | models.Q(expiry__gt=now))


class ApiTokenManager(AuthTokenManager.from_queryset(ApiTokenQuerySet)):
    """knox's `create` (returns the row and the secret) plus the queryset's methods."""


class ApiToken(AbstractAuthToken):
    """The secret is never stored: only its digest (knox). The primary key is that
    digest, so the API names a token by `public_id` instead."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenManager()

    class Meta:
        ordering = ["-created"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"

    def is_expired(self, now=None) -> bool:
        return self.expiry is not None and self.expiry <= (now or timezone.now())


class SshKey(models.Model):
    """A user's SSH public key, put into the `tt` user's authorized_keys of their VMs.

    Stored as accounts.sshkeys parsed it: the canonical `<type> <base64>`, never the
    text as pasted. A key is once per user (its fingerprint), and named."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ssh_keys")
    name = models.CharField(max_length=100)
    key_type = models.CharField(max_length=40, editable=False)
    public_key = models.TextField(editable=False, help_text="<type> <base64>, as the key loader wrote it.")
    comment = models.CharField(max_length=255, blank=True, editable=False)
    bits = models.PositiveIntegerField(editable=False)
    fingerprint = models.CharField(max_length=64, editable=False,
                                   help_text='"SHA256:…" as ssh-keygen -l shows it.')
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name", "pk"]
        verbose_name = "SSH key"
        constraints = [
            models.UniqueConstraint(fields=["user", "fingerprint"], name="ssh_key_once_per_user"),
            models.UniqueConstraint(fields=["user", "name"], name="ssh_key_name_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"

    @property
    def line(self) -> str:
        """The authorized_keys line."""
        return f"{self.public_key} {self.comment}".rstrip()

    @staticmethod
    def lines_of(user) -> list[str]:
        """`user`'s keys as authorized_keys lines, oldest first: what a new VM of theirs gets."""
        return [key.line for key in SshKey.objects.filter(user=user).order_by("created", "pk")]


class QuotaOverride(models.Model):
    """Limits an operator sets instead of the settings' defaults (TT_QUOTA_*); an empty
    field inherits. accounts.quotas.limits_for says how a user's limits are resolved:
    their own override, else the most generous of their groups', else the default.

    The field names are the quotas' names (accounts.quotas.QUOTAS), the API's too."""

    envs = models.PositiveIntegerField("live Envs", null=True, blank=True)
    vms = models.PositiveIntegerField("live VMs", null=True, blank=True, help_text="In all Envs together.")
    vcpus = models.PositiveIntegerField("vCPUs", null=True, blank=True, help_text="Of all live VMs together.")
    mem_mb = models.PositiveIntegerField("memory (MiB)", null=True, blank=True,
                                         help_text="Of all live VMs together.")
    disk_mb = models.PositiveIntegerField("disk (MiB)", null=True, blank=True,
                                          help_text="Of all live VMs together.")
    snapshots = models.PositiveIntegerField("snapshots", null=True, blank=True,
                                            help_text="Of all live VMs together.")
    ports = models.PositiveIntegerField("forwarded ports", null=True, blank=True,
                                        help_text="Public ports of all live VMs together.")
    lifetime = models.PositiveIntegerField(
        "longest lifetime (s)", null=True, blank=True,
        help_text="Seconds an Env may live, counted from its start (TT_MAX_ENV_LIFETIME bounds it too).",
    )
    extension = models.PositiveIntegerField(
        "longest extension (s)", null=True, blank=True,
        help_text="Seconds one extension may move an Env's end by (from its current end, or from now "
        "once that has passed).",
    )
    note = models.CharField(max_length=200, blank=True, help_text="Why, for the next operator.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    def clean(self) -> None:
        longest = settings.TT_MAX_ENV_LIFETIME
        errors = {
            name: f"must be at most TT_MAX_ENV_LIFETIME ({longest} s): no Env lives longer"
            for name in ("lifetime", "extension")
            if getattr(self, name) is not None and getattr(self, name) > longest
        }
        if errors:
            raise ValidationError(errors)


class UserQuota(QuotaOverride):
    """One user's own limits: what they set wins over every group's and the defaults."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota")

    class Meta:
        verbose_name = "user quota"

    def __str__(self) -> str:
        return f"quota of {self.user}"


class GroupQuota(QuotaOverride):
    """Limits for a group's members: a member with several such groups gets, quota by quota,
    the most generous of them (and their own override, if they have one, before any)."""

    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, related_name="quota")

    class Meta:
        verbose_name = "group quota"

    def __str__(self) -> str:
        return f"quota of group {self.group}"


class OidcIdentity(models.Model):
    """Who a user is at an OpenID provider: the ID token's issuer and subject, the one
    stable name of a person there (accounts/oidc.py). A sign-in finds its user by this
    pair only, never by email; a user may hold identities at several issuers."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="oidc_identities")
    issuer = models.CharField(max_length=255, help_text="The ID token's iss.")
    subject = models.CharField(max_length=255, help_text="The ID token's sub: stable at the issuer.")
    created = models.DateTimeField(default=timezone.now, editable=False)
    last_login = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "OpenID identity"
        verbose_name_plural = "OpenID identities"
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="oidc_identity_once"),
        ]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer} ({self.user})"
