"""Envs and the operation log in the admin. Every change goes through envs.services."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.db.models import Count, Q
from django.utils import timezone

from envs import services
from envs.models import Env, Operation
from ttportal.admin_actions import OperateMixin, service_action
from ttportal.admin_base import ReadOnlyTabularInline, ViewOnlyMixin, expiry_filter, format_seconds
from vms.models import Vm


def _extend_by_a_day(env: Env, by):
    # From the current end, or from now if the Env is past its end but not yet swept.
    start = max(env.end_at, timezone.now())
    return services.env_extend(env=env, by=by, end_at=start + timedelta(days=1))


class VmInline(ReadOnlyTabularInline):
    model = Vm
    fields = ("name", "status", "node", "template", "net_kind", "ip", "addr", "cpu_num", "mem_mb", "disk_mb")
    readonly_fields = fields
    verbose_name_plural = "VMs"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("node", "template", "env__owner")


@admin.register(Env)
class EnvAdmin(OperateMixin, ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("name", "owner", "status", "start_at", "end_at", "time_left", "vm_count",
                    "is_stopped", "deny_outgoing")
    list_filter = ("status", ("owner", admin.RelatedOnlyFieldListFilter), "deny_outgoing",
                   expiry_filter("end_at"))
    list_select_related = ("owner",)
    search_fields = ("name", "owner__username")
    date_hierarchy = "start_at"
    fields = ("name", "owner", "status", "start_at", "end_at", "time_left", "vm_count", "is_stopped",
              "deny_outgoing", "last_mgmt_at", "destroyed_at")
    readonly_fields = fields
    inlines = (VmInline,)
    actions = (
        service_action("start", "Start the selected Envs", "start queued",
                       lambda env, by: services.env_start(env=env, by=by)),
        service_action("stop", "Stop the selected Envs", "stop queued",
                       lambda env, by: services.env_stop(env=env, by=by)),
        service_action("extend_by_a_day", "Extend the selected Envs by a day", "extended by a day",
                       _extend_by_a_day),
        service_action("deny_outgoing", "Deny outgoing traffic", "deny outgoing queued",
                       lambda env, by: services.env_set_deny_outgoing(env=env, deny=True, by=by)),
        service_action("allow_outgoing", "Allow outgoing traffic", "allow outgoing queued",
                       lambda env, by: services.env_set_deny_outgoing(env=env, deny=False, by=by)),
        service_action("destroy", "Destroy the selected Envs", "destroy queued",
                       lambda env, by: services.env_destroy(env=env, by=by)),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            live_vms=Count("vms", filter=~Q(vms__status=Vm.Status.DESTROYED))
        )

    @admin.display(description="time left", ordering="end_at")
    def time_left(self, env: Env) -> str:
        if not env.is_live:
            return "-"
        return format_seconds(env.seconds_left())

    @admin.display(description="VMs", ordering="live_vms")
    def vm_count(self, env: Env) -> int:
        return getattr(env, "live_vms", 0)


@admin.register(Operation)
class OperationAdmin(ViewOnlyMixin, admin.ModelAdmin):
    """The audit log: nothing here is edited, added or deleted by hand."""

    list_display = ("id", "kind", "status", "target", "env", "requested_by", "progress", "error_code",
                    "created_at", "duration")
    list_filter = ("status", "kind", "error_code")
    list_select_related = ("env__owner", "requested_by")
    search_fields = ("target", "error_message")
    date_hierarchy = "created_at"
    fields = ("kind", "status", "target", "env", "vm", "snapshot", "requested_by", "params", "progress",
              "error_code", "error_message", "log", "idempotency_key", "created_at", "started_at",
              "finished_at", "duration")
    readonly_fields = fields
    actions = None

    @admin.display(description="duration")
    def duration(self, op: Operation):
        return op.duration
