"""Operation: one long or audited action, its progress while it runs and the record afterwards."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

import ttportal.lookups  # noqa: F401 (registers __among, the lookup of visible_to)
from engines.errors import ErrorCode
from operations import registry
from ttportal import permissions


class OperationQuerySet(models.QuerySet):
    def visible_to(self, user) -> OperationQuerySet:
        if permissions.sees_others(user, "operation_view"):
            return self
        if user is None or not user.is_authenticated:
            return self.none()
        # Shared Envs' too: their ids from the Env model (envs sits above operations).
        return self.filter(env_id__among=self.model._meta.get_field("env").related_model.objects.ids_of(user))


class Operation(models.Model):
    """One long or audited action: its progress while it runs, the record afterwards."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    DONE = (Status.SUCCEEDED, Status.FAILED)
    LIVE = (Status.QUEUED, Status.RUNNING)

    # Each app's own kinds (operations/registry.py): the values are the column's, unchanged.
    kind = models.CharField(max_length=32, choices=registry.kind_choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    env = models.ForeignKey(
        "envs.Env", null=True, blank=True, on_delete=models.CASCADE, related_name="operations",
        help_text="Empty only for what concerns a node alone (drift no Env owns).",
    )
    vm = models.ForeignKey(
        "vms.Vm", null=True, blank=True, on_delete=models.SET_NULL, related_name="operations"
    )
    snapshot = models.ForeignKey(
        "vms.Snapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="operations"
    )
    target = models.CharField(max_length=200, blank=True, help_text="What it acted on, kept after deletion.")
    params = models.JSONField(default=dict, blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    error_code = models.CharField(max_length=32, blank=True, choices=ErrorCode.choices())
    error_message = models.TextField(blank=True)
    log = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="operations", help_text="Who asked (an operator acting for an owner shows here).",
    )
    idempotency_key = models.CharField(max_length=128, blank=True, default="")
    # What the keyed request asked (operations.recording.request_fingerprint): the same key
    # with another request is refused rather than answered with this operation.
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The lease (operations/runner.py): who runs it, which attempt, and when that
    # worker last said it is still at it. A lease that stops being renewed is
    # taken over by the recovery pass (operations/recovery.py).
    attempt = models.PositiveSmallIntegerField(
        default=0, help_text="How many times a worker has taken it (0: not yet)."
    )
    worker = models.CharField(max_length=200, blank=True, help_text="The worker holding its lease.")
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="When its worker last renewed the lease."
    )
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When a task for it was last handed to the broker."
    )
    # Whose task cluster runs it (operations/runner.dispatch): the node of its VM, or of most
    # of its Env's VMs. Empty: the site's cluster (no VM yet, or a node-less record).
    node = models.ForeignKey(
        "nodes.Node", null=True, blank=True, on_delete=models.SET_NULL, related_name="operations",
        help_text="The node whose task cluster runs it.",
    )

    objects = OperationQuerySet.as_manager()

    class Meta:
        # The table it has had since it was envs.Operation: moved with its rows.
        db_table = "envs_operation"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["requested_by", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="operation_idempotency_key_unique_per_user",
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="operation_status_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.target} [{self.status}]"

    def get_kind_display(self) -> str:
        """The kind's label, read from the registry's dict. Django's own (which a method
        of this name replaces) calls kind_choices() and flattens the list on every call: a
        sixth of the operations table of an Env page, 25 rows."""
        return registry.kind_label(self.kind)

    @property
    def is_done(self) -> bool:
        return self.status in self.DONE

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE

    @property
    def vm_ids(self) -> set[int]:
        """Every VM it acts on: its own VM, and those an Env-wide action names."""
        ids = {int(pk) for pk in (self.params or {}).get("vm_ids", [])}
        if self.vm_id:
            ids.add(self.vm_id)
        return ids

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None
