"""Notifications as the API shows them: webhooks (the secret only once, in the create
answer), deliveries, and a user's settings."""

from __future__ import annotations

from rest_framework import serializers

from notifications.models import Delivery, Notification, Webhook
from ttportal import limits
from ttportal.api_fields import Boolean, StrictSerializer, Text


class WebhookSerializer(serializers.HyperlinkedModelSerializer):
    endpoint = serializers.CharField(read_only=True, help_text="Where notifications are POSTed.")

    class Meta:
        model = Webhook
        fields = ["id", "url", "name", "endpoint", "created"]
        read_only_fields = fields
        extra_kwargs = {"url": {"view_name": "api:webhook-detail"}}


class NewWebhookSerializer(WebhookSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="Signs every body (X-TT-Signature). Shown only in this answer."
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookCreate(StrictSerializer):
    endpoint = Text(
        rule=limits.WEBHOOK_URL_RULE, pattern=limits.WEBHOOK_URL_PATTERN, max_length=limits.WEBHOOK_URL_MAX,
        help_text="The receiver's URL: http:// or https://. Sent only to public addresses unless the "
        "operators allow private ones; never into a VM network (422).",
    )
    name = Text(rule=limits.TOKEN_NAME_RULE, pattern=limits.TOKEN_NAME_PATTERN,
                max_length=limits.TOKEN_NAME_MAX, required=False, help_text="Default: the URL's host.")


class DeliverySerializer(serializers.HyperlinkedModelSerializer):
    event = serializers.ChoiceField(
        source="notification.kind", choices=Notification.Kind.choices, read_only=True,
        help_text="What it tells: env.expiring, env.expired, operation.failed or test.",
    )
    summary = serializers.SerializerMethodField(help_text="The notification in one sentence.")
    webhook = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    target = serializers.CharField(read_only=True, help_text="The email address or webhook URL.")
    last_error = serializers.CharField(read_only=True, help_text="Empty unless an attempt failed.")
    response_status = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="The webhook's last HTTP status."
    )

    class Meta:
        model = Delivery
        fields = ["id", "url", "event", "summary", "channel", "webhook", "target", "status", "attempts",
                  "next_attempt_at", "last_error", "response_status", "created_at", "last_attempt_at",
                  "delivered_at"]
        read_only_fields = fields
        extra_kwargs = {"url": {"view_name": "api:delivery-detail"}}

    def get_summary(self, delivery: Delivery) -> str:
        return str(delivery.notification.payload.get("summary", ""))


class NotificationSettingsSerializer(serializers.Serializer):
    email = serializers.CharField(read_only=True,
                                  help_text="Your account's address (empty: no email is sent).")
    email_enabled = serializers.BooleanField(read_only=True)


class NotificationSettingsUpdate(StrictSerializer):
    email_enabled = Boolean(help_text="Send notifications to your email address.")
