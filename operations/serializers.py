"""The API representation of an Operation: what a long action answers (202) and what
/api/operations/ lists."""

from __future__ import annotations

from rest_framework import serializers

from operations.models import Operation


class OperationSerializer(serializers.HyperlinkedModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:operation-detail")
    env = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    vm = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    snapshot = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    error_code = serializers.CharField(
        read_only=True, help_text="Empty unless it failed: the stable code of the step that failed."
    )
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    is_done = serializers.BooleanField(read_only=True)
    attempt = serializers.IntegerField(
        read_only=True, help_text="How many workers have taken it; above 1, a worker was lost and "
        "another took it over (it resumes from what the node has).",
    )
    heartbeat_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="While it runs: when its worker last said it is at it."
    )

    class Meta:
        model = Operation
        fields = [
            "id", "url", "kind", "status", "is_done", "progress", "env", "vm", "snapshot", "target",
            "params", "error_code", "error_message", "log", "requested_by", "idempotency_key",
            "created_at", "started_at", "finished_at", "attempt", "heartbeat_at",
        ]
        read_only_fields = fields
