"""The operations' admin: the audit log, read-only; a stuck operation can be handed to a
worker now, or ended (operations/services.py)."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone

from operations import lease, recovery, services
from operations.models import Operation
from ttportal.admin_actions import OperateMixin, service_action
from ttportal.admin_base import ViewOnlyMixin, format_seconds


class LeaseFilter(admin.SimpleListFilter):
    """Live operations, and among them the stuck ones: running with a lease that ran out,
    or queued for longer than a lease."""

    title = "lease"
    parameter_name = "lease"

    def lookups(self, request, model_admin):
        return [("live", "Queued or running"), ("stuck", "Stuck (no live worker)")]

    def queryset(self, request, queryset):
        if self.value() == "live":
            return queryset.filter(status__in=Operation.LIVE)
        if self.value() == "stuck":
            return queryset.filter(recovery.stuck_q(timezone.now()))
        return queryset


@admin.register(Operation)
class OperationAdmin(OperateMixin, ViewOnlyMixin, admin.ModelAdmin):
    """The audit log: nothing here is edited, added or deleted by hand. A stuck
    operation can be handed to a worker now, or ended."""

    list_display = ("id", "kind", "status", "target", "env", "requested_by", "progress", "error_code",
                    "created_at", "age", "lease_state", "attempt")
    list_filter = (LeaseFilter, "status", "kind", "error_code")
    list_select_related = ("env__owner", "requested_by")
    search_fields = ("target", "error_message")
    date_hierarchy = "created_at"
    fields = ("kind", "status", "target", "env", "vm", "snapshot", "requested_by", "params", "progress",
              "error_code", "error_message", "log", "idempotency_key", "created_at", "started_at",
              "finished_at", "duration", "age", "attempt", "worker", "heartbeat_at", "lease_state",
              "dispatched_at")
    readonly_fields = fields
    actions = (
        service_action("retry_now", "Retry the selected stuck operations now", "handed to a worker",
                       lambda op, by: services.operation_retry(op=op, by=by),
                       policy_action="operation_retry"),
        service_action("fail_now", "End the selected operations now (failed, settled)", "ended",
                       lambda op, by: services.operation_fail(op=op, by=by), policy_action="operation_fail"),
    )

    @admin.display(description="duration")
    def duration(self, op: Operation):
        return op.duration

    @admin.display(description="age", ordering="created_at")
    def age(self, op: Operation) -> str:
        """How long it has been live; for an ended one, how long it took."""
        if op.is_live:
            return format_seconds(int((timezone.now() - op.created_at).total_seconds()))
        return format_seconds(int(op.duration.total_seconds())) if op.duration else "-"

    @admin.display(description="lease")
    def lease_state(self, op: Operation) -> str:
        now = timezone.now()
        if not op.is_live:
            return "-"
        if op.status == Operation.Status.QUEUED:
            waited = format_seconds(int((now - (op.dispatched_at or op.created_at)).total_seconds()))
            return f"queued, dispatched {waited} ago" + (" (stuck)" if recovery.is_stuck(op, now) else "")
        if op.heartbeat_at is None:
            return "handed back: the next worker takes it"
        beat = format_seconds(int((now - op.heartbeat_at).total_seconds()))
        state = "stuck" if recovery.is_stuck(op, now) else "live"
        return f"{state}: {lease.describe(op.worker)}, last heartbeat {beat} ago"
