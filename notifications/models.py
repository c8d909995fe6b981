"""What the portal tells people, how, and whether it arrived.

    Notification  one thing to tell one user, once: its `key` is unique in the database,
                  so a sweep run twice, or two workers, never make a second one
    Delivery      that notification through one channel (the user's email address, one of
                  their webhooks): status, attempts, the last error; the admin's delivery log
    Webhook       a user's receiver: a URL and the secret its bodies are signed with
    NotificationSettings  a user's choices (email on or off); no row: the defaults
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class NotificationSettings(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_settings"
    )
    email_enabled = models.BooleanField(
        default=True, help_text="Send notifications to the user's email address (when they have one)."
    )

    class Meta:
        verbose_name = "notification settings"
        verbose_name_plural = "notification settings"

    def __str__(self) -> str:
        return f"{self.user}: email {'on' if self.email_enabled else 'off'}"

    @staticmethod
    def of(user) -> NotificationSettings:
        """The user's settings, or the defaults (unsaved) when they never changed them."""
        found = NotificationSettings.objects.filter(user=user).first()
        return found or NotificationSettings(user=user)


class Webhook(models.Model):
    """A receiver of the user's notifications, POSTed a signed JSON body.

    The secret is kept as it is (it signs every body, so it cannot be a digest as API
    tokens are); it is shown once, when the webhook is made, and never again."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks")
    name = models.CharField(max_length=100)
    endpoint = models.URLField(max_length=2000, help_text="Where bodies are POSTed (http or https).")
    secret = models.CharField(max_length=100, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="webhook_name_per_user")]

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"


class Notification(models.Model):
    class Kind(models.TextChoices):
        ENV_EXPIRING = "env.expiring", "Env expires soon"
        ENV_EXPIRED = "env.expired", "Env destroyed by expiry"
        OPERATION_FAILED = "operation.failed", "Operation failed"
        TEST = "test", "Test"

    # What makes it once: "env.expiring:env=12:end=<end_at>:before=600",
    # "env.expired:env=12", "operation.failed:op=34", "test:<uuid>". The end is part of
    # a warning's key, so an Env whose end moved is warned again before its new end.
    key = models.CharField(max_length=200, unique=True, editable=False)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    env = models.ForeignKey("envs.Env", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    operation = models.ForeignKey(
        "operations.Operation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Expiry warnings: the end they warn of, and how long before it.
    end_at = models.DateTimeField(null=True, blank=True)
    before = models.PositiveIntegerField(null=True, blank=True, help_text="Seconds before the end.")
    # The facts as they were when it was made: what every channel tells (the webhook body).
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Its "extend by 1 h" link (expiry warnings) works once.
    extend_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["env", "kind", "end_at"], name="notification_warned_idx")]

    def __str__(self) -> str:
        return self.key


class Delivery(models.Model):
    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (queued)"
        SENDING = "sending"
        RETRYING = "retrying", "Retrying (waiting for the next attempt)"
        DELIVERED = "delivered"
        FAILED = "failed"
        SKIPPED = "skipped", "Skipped (nothing to send it to)"

    WAITING = (Status.PENDING, Status.RETRYING)
    DONE = (Status.DELIVERED, Status.FAILED, Status.SKIPPED)

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    webhook = models.ForeignKey(
        Webhook, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    target = models.CharField(max_length=2000, blank=True, help_text="The email address or webhook URL.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    response_status = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The webhook's last HTTP status."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When its task was last enqueued.")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        constraints = [
            # One delivery per channel and receiver: the notification's key makes it once,
            # these make each of its deliveries once.
            models.UniqueConstraint(fields=["notification"], condition=Q(channel="email"),
                                    name="delivery_one_email_per_notification"),
            models.UniqueConstraint(fields=["notification", "webhook"], condition=Q(channel="webhook"),
                                    name="delivery_one_per_webhook_per_notification"),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due_idx")]

    def __str__(self) -> str:
        return f"{self.notification.kind} → {self.channel} {self.target} [{self.status}]"

    @property
    def css(self) -> str:
        """The portal's status colour."""
        return {"delivered": "op-succeeded", "failed": "op-failed", "sending": "op-running"}.get(
            self.status, "op-queued")
