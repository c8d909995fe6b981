"""AuditEvent: one row per action, never changed, removed only by the retention prune."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from audit import context


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("audit events are append-only: they are never updated")


class AuditEvent(models.Model):
    class Result(models.TextChoices):
        OK = "ok"
        REFUSED = "refused"  # a refusal (Forbidden, InvalidInput, quota, cooldown...): nothing changed
        FAILED = "failed"  # an error that was not a refusal, or an operation that failed in its task

    at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)
    # Who: a user (kept as named at the time: a deleted user's events keep their name) or the
    # system, with the schedule's or task's name. No database constraint on the user: the
    # rows outlive the users and are never updated to forget them.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
                             db_constraint=False, related_name="+", db_index=False)
    username = models.CharField(max_length=150, blank=True)
    system = models.CharField(max_length=100, blank=True, help_text="the schedule or task that acted")
    # For whom: the owner of what was acted on (someone else than `user` when staff act).
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
                              db_constraint=False, related_name="+", db_index=False)
    verb = models.CharField(max_length=64, db_index=True)
    # On what, as it was named at the time; `env_id` is the Env it belongs to (an Env's
    # admins read the events on their Env and its VMs and snapshots).
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_name = models.CharField(max_length=200, blank=True)
    env_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    # From where.
    interface = models.CharField(max_length=16, choices=[(i, i) for i in context.INTERFACES])
    address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=context.USER_AGENT_MAX, blank=True)
    token_id = models.CharField(max_length=64, blank=True, help_text="the API token's public id")
    result = models.CharField(max_length=16, choices=Result.choices, default=Result.OK)
    code = models.CharField(max_length=64, blank=True,
                            help_text="the stable error code of a refusal or failure")
    detail = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "audit event"
        indexes = [models.Index(fields=["user", "at"], name="audit_user_at"),
                   models.Index(fields=["owner", "at"], name="audit_owner_at")]

    def __str__(self) -> str:
        who = self.username or f"system ({self.system or 'tt'})"
        on = f" {self.object_type} {self.object_name or self.object_id}" if self.object_type else ""
        return f"{self.at:%Y-%m-%d %H:%M:%S} {who} {self.verb}{on}: {self.result}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("audit events are append-only: they are never updated")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("audit events are removed only by the retention prune (audit.prune)")

    @property
    def actor(self) -> str:
        return self.username or f"system: {self.system or 'tt'}"
