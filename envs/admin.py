"""Envs and peerings in the admin (the operation log is operations/admin.py). Every change
goes through envs.services."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from envs import blueprints, services
from envs.admin_forms import EnvActionForm, EnvAddForm, VmRowFormSet
from envs.forms import create_env_from
from envs.models import Blueprint, Env, EnvMember, Peering
from operations.models import Operation
from ttportal.admin_actions import OperateMixin, policy_bound, run_service, service_action
from ttportal.admin_base import ReadOnlyTabularInline, ViewOnlyMixin, expiry_filter, format_seconds
from vms.models import Vm, live_vms


@admin.action(description="Extend the selected Envs by a day")
def extend_by_a_day(modeladmin, request, queryset):
    """Bound by each owner's quota (longest lifetime, longest extension) unless the operator
    ticked "Ignore the owner's quota" in the action bar (then recorded on each operation)."""
    ignore = EnvActionForm.ignore_quota_in(request)
    run_service(modeladmin, request, queryset,
                lambda env, by: services.env_extend(env=env, by=by, extend_by=timedelta(days=1),
                                                    ignore_quota=ignore),
                "extended by a day, the owners' quotas ignored" if ignore else "extended by a day")


policy_bound(extend_by_a_day, "env_extend")


class VmInline(ReadOnlyTabularInline):
    model = Vm
    fields = ("name", "status", "node", "template", "net_kind", "ip", "addr", "cpu_num", "mem_mb", "disk_mb")
    readonly_fields = fields
    verbose_name_plural = "VMs"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("node", "template", "env__owner")


class MemberInline(ReadOnlyTabularInline):
    """Whom the Env is shared with (envs/sharing.py). Viewed here; granted, changed and
    taken back on the Env's portal page or through the API (`/api/envs/{id}/members/`),
    where the services tell the open consoles at once."""

    model = EnvMember
    fields = ("user", "group", "role", "granted_by", "granted_at")
    readonly_fields = fields
    show_change_link = False
    verbose_name = "member"
    verbose_name_plural = "Members (shared with; change them on the Env's portal page)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "group", "granted_by")


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
    inlines = (VmInline, MemberInline)
    actions = (
        service_action("start", "Start the selected Envs", "start queued",
                       lambda env, by: services.env_start(env=env, by=by), policy_action="env_start"),
        service_action("stop", "Stop the selected Envs", "stop queued",
                       lambda env, by: services.env_stop(env=env, by=by), policy_action="env_stop"),
        extend_by_a_day,
        service_action("deny_outgoing", "Deny outgoing traffic", "deny outgoing queued",
                       lambda env, by: services.env_set_deny_outgoing(env=env, deny=True, by=by),
                       policy_action="env_set_deny_outgoing"),
        service_action("allow_outgoing", "Allow outgoing traffic", "allow outgoing queued",
                       lambda env, by: services.env_set_deny_outgoing(env=env, deny=False, by=by),
                       policy_action="env_set_deny_outgoing"),
        service_action("destroy", "Destroy the selected Envs", "destroy queued",
                       lambda env, by: services.env_destroy(env=env, by=by), policy_action="env_destroy"),
    )

    action_form = EnvActionForm
    add_form_template = "admin/envs/env/add_env.html"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            live_vms=Count("vms", filter=live_vms())
        )

    def has_add_permission(self, request, obj=None) -> bool:
        # Adding means asking env_create for a new Env (never a bare row save):
        # operators with envs.add_env (and superusers) may, for any user.
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('add', self.opts)}")

    def add_view(self, request, form_url="", extra_context=None):
        """An Env with its VMs for a chosen owner, through envs.services.env_create."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = EnvAddForm(request.POST)
            formset = VmRowFormSet(request.POST, prefix="vms")
            op = create_env_from(form, formset, by=request.user)
            if op is not None:
                return self._created(request, op)
        else:
            form = EnvAddForm()
            formset = VmRowFormSet(prefix="vms")
        return self._render_add(request, form, formset, extra_context)

    def _created(self, request, op: Operation):
        env = op.env
        op_url = reverse("admin:operations_operation_change", args=[op.pk])
        self.message_user(
            request,
            format_html('Env “{}” for {}: creation queued as <a href="{}">operation {}</a>.',
                        env.name, env.owner, op_url, op.pk),
            messages.SUCCESS,
        )
        if self.has_view_or_change_permission(request, env):
            return HttpResponseRedirect(reverse("admin:envs_env_change", args=[env.pk]))
        return HttpResponseRedirect(reverse("admin:index"))

    def _render_add(self, request, form: EnvAddForm, formset, extra_context=None):
        adminform = helpers.AdminForm(
            form, [(None, {"fields": ["owner", "name", "lifetime_hours", "deny_outgoing", "ignore_quota"]})],
            prepopulated_fields={}, model_admin=self,
        )
        errors = helpers.AdminErrorList(form, [formset]) if request.method == "POST" else []
        context = {
            **self.admin_site.each_context(request),
            "title": "Add Env",
            "subtitle": None,
            "opts": self.opts,
            "add": True,
            "adminform": adminform,
            "form": form,
            "formset": formset,
            "errors": errors,
            "media": self.media + form.media + formset.media,
            "has_view_permission": self.has_view_permission(request),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.add_form_template, context)

    @admin.display(description="time left", ordering="end_at")
    def time_left(self, env: Env) -> str:
        if not env.is_live:
            return "-"
        return format_seconds(env.seconds_left())

    @admin.display(description="VMs", ordering="live_vms")
    def vm_count(self, env: Env) -> int:
        return getattr(env, "live_vms", 0)


@admin.register(Peering)
class PeeringAdmin(ViewOnlyMixin, admin.ModelAdmin):
    """Which Envs' VMs may reach each other. Changed only through envs.peering."""

    list_display = ("id", "env_a", "env_b", "status", "asked_for", "requested_by", "accepted_by",
                    "created_at", "ended_at")
    list_filter = ("status",)
    list_select_related = ("env_a__owner", "env_b__owner", "asked_for__owner", "requested_by", "accepted_by")
    search_fields = ("env_a__name", "env_b__name", "env_a__owner__username", "env_b__owner__username")
    readonly_fields = list_display


@admin.register(Blueprint)
class BlueprintAdmin(OperateMixin, ViewOnlyMixin, admin.ModelAdmin):
    """Saved Env files (envs/blueprints.py). Viewed here; published or withdrawn through
    blueprint_publish (envs.publish_blueprint), deleted through blueprint_delete."""

    list_display = ("name", "owner", "env_name", "published", "updated_at")
    list_filter = ("published", ("owner", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("owner",)
    search_fields = ("name", "owner__username", "description", "env_name")
    fields = ("name", "owner", "description", "env_name", "published", "shared_with_users",
              "shared_with_groups", "text", "created_at", "updated_at")
    readonly_fields = fields
    actions = (
        service_action("publish", "Publish the selected blueprints to everyone", "published",
                       lambda bp, by: blueprints.blueprint_publish(blueprint=bp, by=by),
                       policy_action="blueprint_publish"),
        service_action("unpublish", "Withdraw the selected blueprints from everyone", "withdrawn",
                       lambda bp, by: blueprints.blueprint_unpublish(blueprint=bp, by=by),
                       policy_action="blueprint_publish"),
        service_action("delete_blueprints", "Delete the selected blueprints", "deleted",
                       lambda bp, by: blueprints.blueprint_delete(blueprint=bp, by=by),
                       policy_action="blueprint_delete"),
    )
