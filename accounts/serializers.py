"""API tokens as the API shows them: never the secret, except once in the create answer."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import ApiToken


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


class TokenCreate(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text='What it is for, e.g. "CI of project X".')
    expires_in = serializers.IntegerField(
        required=False, allow_null=True,
        help_text="Seconds until it stops working (60 s to TT_API_TOKEN_MAX_TTL, one year by default); "
        "default TT_API_TOKEN_DEFAULT_TTL (30 days).",
    )
