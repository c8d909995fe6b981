"""API tokens as the API shows them (never the secret, except once in the create answer),
SSH public keys, and one's quotas."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts import sshkeys
from accounts.models import ApiToken, SshKey
from ttportal import limits
from ttportal.api_fields import Integer, StrictSerializer, Text


class TokenSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    url = serializers.HyperlinkedIdentityField(view_name="api:token-detail", lookup_field="public_id",
                                               lookup_url_kwarg="id")
    current = serializers.SerializerMethodField(help_text="This request was made with this token.")

    class Meta:
        model = ApiToken
        fields = ["id", "url", "name", "created", "expiry", "last_used_at", "current"]
        read_only_fields = fields

    @extend_schema_field(serializers.BooleanField())
    def get_current(self, token: ApiToken) -> bool:
        request = self.context.get("request")
        auth = getattr(request, "auth", None)
        return isinstance(auth, ApiToken) and auth.pk == token.pk


class NewTokenSerializer(TokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The secret. Shown only in this answer.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class TokenCreate(StrictSerializer):
    name = Text(rule=limits.TOKEN_NAME_RULE, pattern=limits.TOKEN_NAME_PATTERN,
                max_length=limits.TOKEN_NAME_MAX, help_text='What it is for, e.g. "CI of project X".')
    expires_in = Integer(
        min_value=limits.TOKEN_TTL_MIN, max_value=limits.token_ttl_max(), unit="seconds",
        required=False, allow_null=True,
        help_text="Seconds until it stops working (60 s to TT_API_TOKEN_MAX_TTL, one year by default); "
        "null or absent: TT_API_TOKEN_DEFAULT_TTL (30 days).",
    )

    def get_fields(self):
        fields = super().get_fields()
        fields["expires_in"] = Integer(
            min_value=limits.TOKEN_TTL_MIN, max_value=limits.token_ttl_max(), unit="seconds",
            required=False, allow_null=True, help_text=fields["expires_in"].help_text,
        )
        return fields


class SshKeySerializer(serializers.HyperlinkedModelSerializer):
    type = serializers.CharField(source="key_type", read_only=True, help_text='e.g. "ssh-ed25519".')
    public_key = serializers.CharField(
        source="line", read_only=True,
        help_text="The authorized_keys line VMs get: <type> <base64> [comment].",
    )

    class Meta:
        model = SshKey
        fields = ["id", "url", "name", "type", "bits", "fingerprint", "comment", "public_key", "created"]
        read_only_fields = fields
        extra_kwargs = {"url": {"view_name": "api:ssh-key-detail"}}


class SshKeyCreate(StrictSerializer):
    public_key = Text(
        rule=sshkeys.RULE, pattern=sshkeys.PATTERN, max_length=sshkeys.TEXT_MAX,
        help_text="One line of a .pub file: ssh-ed25519, ecdsa-sha2-nistp256/384/521, or ssh-rsa of "
        f"{sshkeys.RSA_MIN_BITS} bits or more. Its data must decode (422 if it does not).",
    )
    name = Text(rule=limits.TOKEN_NAME_RULE, pattern=limits.TOKEN_NAME_PATTERN,
                max_length=limits.TOKEN_NAME_MAX, required=False,
                help_text="Default: the key's comment, else its fingerprint.")


_SOURCE_HELP = 'Where the limit comes from: "user" (your own override), "group <name>" (the most ' \
    'generous of your groups\' overrides) or "default" (the TT_QUOTA_* setting).'


class CountedQuota(serializers.Serializer):
    limit = serializers.IntegerField(help_text="The most you may hold at once.")
    used = serializers.IntegerField(help_text="What you hold now (live Envs, live VMs and their snapshots).")
    source = serializers.CharField(help_text=_SOURCE_HELP)


class DurationQuota(serializers.Serializer):
    limit = serializers.IntegerField(help_text="Seconds.")
    source = serializers.CharField(help_text=_SOURCE_HELP)


class QuotaSerializer(serializers.Serializer):
    """Each of your quotas (accounts/quotas.py). A request that would take you past one is
    refused with 403 quota_exceeded, naming the quota, its limit, the use and what it adds."""

    user = serializers.CharField(help_text="Whose quotas these are (yours).")
    envs = CountedQuota(help_text="Live Envs (not destroyed).")
    vms = CountedQuota(help_text="Live VMs, in all your Envs together.")
    vcpus = CountedQuota(help_text="vCPUs of your live VMs together.")
    mem_mb = CountedQuota(help_text="Memory of your live VMs together, MiB.")
    disk_mb = CountedQuota(help_text="Disk of your live VMs together, MiB.")
    snapshots = CountedQuota(help_text="Snapshots of your live VMs together.")
    ports = CountedQuota(help_text="Forwarded public ports of your live VMs together.")
    lifetime = DurationQuota(help_text="The longest an Env may live, counted from its start, seconds.")
    extension = DurationQuota(help_text="The most one extension may move an Env's end, seconds.")

    @staticmethod
    def of(user, lines) -> dict:
        """The body for `user` from accounts.quotas.report(user)."""
        body: dict = {"user": user.get_username()}
        for line in lines:
            body[line.name] = {"limit": line.limit, "source": line.source}
            if line.used is not None:
                body[line.name]["used"] = line.used
        return body
