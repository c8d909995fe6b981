from __future__ import annotations

from rest_framework import serializers

from audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    user = serializers.IntegerField(source="user_id", read_only=True, allow_null=True,
                                    help_text="The acting user's id; null when the system acted.")
    username = serializers.CharField(read_only=True, help_text="The acting user's name at the time "
                                     "(for a failed login: the name that was typed).")
    system = serializers.CharField(read_only=True, help_text="The schedule or task that acted, when the "
                                   "system did.")
    owner = serializers.IntegerField(source="owner_id", read_only=True, allow_null=True,
                                     help_text="Whom it was done for: the owner of the object acted on.")
    verb = serializers.CharField(read_only=True, help_text="The stable verb: env.create, token.revoke, "
                                 "login.failed... (docs/guide/audit.md).")
    env = serializers.IntegerField(source="env_id", read_only=True, allow_null=True,
                                   help_text="The Env the object belongs to, if any.")
    code = serializers.CharField(read_only=True, help_text="The stable error code of a refusal or failure.")
    detail = serializers.JSONField(read_only=True, help_text="A few facts of the action (never a secret, "
                                   "user data or command output).")

    class Meta:
        model = AuditEvent
        fields = ["id", "at", "user", "username", "system", "owner", "verb", "object_type", "object_id",
                  "object_name", "env", "interface", "address", "user_agent", "token_id", "result", "code",
                  "detail"]
        read_only_fields = fields
