"""Templates, VMs, snapshots and port mappings in the admin.

Templates are configuration and are edited here. VMs, snapshots and port
mappings are state: shown, never edited; actions call vms.services.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Count

from engines.specs import tap_name
from nodes.models import EngineKind
from nodes.registry import node_firewall
from ttportal import limits
from ttportal.admin_actions import OperateMixin, service_action
from ttportal.admin_base import ReadOnlyTabularInline, ViewOnlyMixin, expiry_filter
from vms import (
    node_admin,  # noqa: F401  (the nodes' admin with what their VMs use)
    services,
    warm,
    warm_admin,  # noqa: F401  (registers WarmPool)
)
from vms.models import PortMapping, Snapshot, Vm, VmTemplate, live_vms


def _port_label(vm: Vm, mapping: PortMapping) -> str:
    # The VM's node, already loaded: PortMapping.__str__ would fetch it once per row.
    return f"{vm.node.public_host}:{mapping.public_port} -> {mapping.inner_port}/{mapping.protocol}"


class VmTemplateForm(forms.ModelForm):
    compatible_engines = forms.MultipleChoiceField(
        choices=EngineKind.choices, widget=forms.CheckboxSelectMultiple,
        help_text="Engine kinds that can boot this image.",
    )

    class Meta:
        model = VmTemplate
        fields = ("name", "path", "memo", "compatible_engines", "features", "default_ports", "enabled",
                  "kernel", "initrd", "cmdline", "size_mb", "min_cpu", "min_mem_mb")

    def clean_default_ports(self):
        ports = self.cleaned_data.get("default_ports")
        if ports is None:  # left empty: none
            ports = []
        if not isinstance(ports, list) or not all(
            limits.matches(limits.PORT_TEXT_PATTERN, port) for port in ports
        ):
            raise forms.ValidationError('must be a list of ports as users write them, e.g. ["22", "53/udp"]')
        return ports


@admin.register(VmTemplate)
class VmTemplateAdmin(admin.ModelAdmin):
    form = VmTemplateForm
    list_display = ("name", "engines", "size_mb", "min_resources", "enabled", "vm_count")
    list_filter = ("enabled",)
    search_fields = ("name", "path", "memo")
    readonly_fields = ("vm_count", "created_at")
    fieldsets = (
        (None, {"fields": ("name", "path", "memo", "compatible_engines", "features", "default_ports",
                           "enabled")}),
        ("Direct kernel boot", {"fields": ("kernel", "initrd", "cmdline"),
                                "description": "Leave the kernel empty to boot the image's own loader."}),
        ("Size and minimums", {"fields": ("size_mb", "min_cpu", "min_mem_mb")}),
        ("Record", {"fields": ("vm_count", "created_at")}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            live_vms=Count("vms", filter=live_vms())
        )

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change:
            warm.template_changed(obj)  # its pools' spares were made from the old one

    @admin.display(description="engines")
    def engines(self, template: VmTemplate) -> str:
        return ", ".join(template.compatible_engines or [])

    @admin.display(description="minimum")
    def min_resources(self, template: VmTemplate) -> str:
        return f"{template.min_cpu} vCPU, {template.min_mem_mb} MiB"

    @admin.display(description="live VMs", ordering="live_vms")
    def vm_count(self, template: VmTemplate) -> int:
        return getattr(template, "live_vms", 0)


class PortMappingInline(ReadOnlyTabularInline):
    model = PortMapping
    fields = ("protocol", "inner_port", "public_port", "endpoint")
    readonly_fields = fields
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("node")


class SnapshotInline(ReadOnlyTabularInline):
    model = Snapshot
    fields = ("name", "status", "created_at", "expires_at")
    readonly_fields = fields
    show_change_link = False


@admin.register(Vm)
class VmAdmin(OperateMixin, ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("name", "env", "owner", "node", "status", "ip", "mac", "addr", "resources", "ports")
    list_filter = ("status", "node", ("env__owner", admin.RelatedOnlyFieldListFilter), "net_kind")
    list_select_related = ("env__owner", "node")
    search_fields = ("name", "ip", "mac", "env__name")
    fieldsets = (
        (None, {"fields": ("name", "env", "owner", "node", "template", "status")}),
        ("Resources", {"fields": ("cpu_num", "mem_mb", "disk_mb", "features")}),
        ("Network", {"fields": ("net_kind", "mac", "ip", "addr", "net_blacklist", "port", "spoofed")}),
        ("Engine", {"fields": ("uuid", "rand_uuid", "keep_image", "runtime_image", "latest_meta",
                               "start_kind", "warm_pool")}),
        ("Record", {"fields": ("created_at", "destroyed_at")}),
    )
    readonly_fields = ("owner", "status", "mac", "ip", "addr", "uuid", "runtime_image", "latest_meta",
                       "created_at", "destroyed_at", "port", "spoofed", "start_kind", "warm_pool")
    inlines = (PortMappingInline, SnapshotInline)
    actions = (
        service_action("start", "Start the selected VMs", "start queued",
                       lambda vm, by: services.vm_start(vm=vm, by=by), policy_action="vm_start"),
        service_action("stop", "Stop the selected VMs", "stop queued",
                       lambda vm, by: services.vm_stop(vm=vm, by=by), policy_action="vm_stop"),
        service_action("suspend", "Suspend the selected VMs (memory saved; start resumes them)",
                       "suspend queued", lambda vm, by: services.vm_suspend(vm=vm, by=by),
                       policy_action="vm_suspend"),
        service_action("destroy", "Destroy the selected VMs", "destroy queued",
                       lambda vm, by: services.vm_destroy(vm=vm, by=by), policy_action="vm_destroy"),
    )

    def get_queryset(self, request):
        # select_related here too (not only list_select_related) so actions and
        # the view page get the Env and node without a query per VM.
        return (
            super().get_queryset(request)
            .select_related("env__owner", "node", "template")
            .prefetch_related("port_mappings")
        )

    @admin.display(description="owner", ordering="env__owner__username")
    def owner(self, vm: Vm):
        return vm.env.owner

    @admin.display(description="port on the node")
    def port(self, vm: Vm) -> str:
        return tap_name(vm.engine_name)

    @admin.display(description="frames dropped as spoofed")
    def spoofed(self, vm: Vm) -> str:
        """Sent from its port with a MAC or address not its own (read from the node's firewall)."""
        try:
            drops = node_firewall(vm.node).spoof_drops()
        except Exception as exc:  # a page view must not fail on an unreachable node
            return f"unknown ({exc.__class__.__name__})"
        count = drops.get(tap_name(vm.engine_name))
        return "-" if count is None else str(count)

    @admin.display(description="cpu / mem / disk")
    def resources(self, vm: Vm) -> str:
        return f"{vm.cpu_num} vCPU / {vm.mem_mb} MiB / {vm.disk_mb} MiB"

    @admin.display(description="ports")
    def ports(self, vm: Vm) -> str:
        return ", ".join(_port_label(vm, p) for p in vm.port_mappings.all())


@admin.register(Snapshot)
class SnapshotAdmin(OperateMixin, ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("name", "vm", "owner", "status", "created_at", "expires_at", "life_time")
    list_filter = ("status", expiry_filter("expires_at", nullable=True))
    list_select_related = ("vm__env__owner",)
    search_fields = ("name", "vm__name", "vm__env__name")
    fields = ("name", "vm", "owner", "status", "path", "meta", "life_time", "created_at", "expires_at")
    readonly_fields = fields
    actions = (
        service_action("destroy", "Destroy the selected snapshots", "destroy queued",
                       lambda snapshot, by: services.snapshot_destroy(snapshot=snapshot, by=by),
                       policy_action="snapshot_destroy"),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("vm__env__owner")

    @admin.display(description="owner", ordering="vm__env__owner__username")
    def owner(self, snapshot: Snapshot):
        return snapshot.vm.env.owner


@admin.register(PortMapping)
class PortMappingAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("endpoint", "vm", "node", "protocol", "inner_port", "public_port")
    list_filter = ("protocol", "node")
    list_select_related = ("vm__env", "node")
    search_fields = ("vm__name", "vm__env__name", "public_port")
    fields = ("vm", "node", "protocol", "inner_port", "public_port", "endpoint")
    readonly_fields = fields
    actions = None
