"""Warm pools in the admin: set per node and template, with what their spares hold.

Saving and deleting go through vms.warm (pool_save, pool_delete), which checks the
node and template and has the pool tended on commit.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from nodes.registry import get_engine
from ttportal.admin_actions import OperateMixin, service_action
from ttportal.admin_base import ReadOnlyTabularInline
from ttportal.errors import TTError
from vms import warm
from vms.models import Vm, WarmPool

MIB = 1024 * 1024


class WarmPoolForm(forms.ModelForm):
    sizes = forms.CharField(
        label="VM sizes", widget=forms.Textarea(attrs={"rows": 3, "cols": 30}),
        help_text=f"The VM sizes it covers, {warm.SIZE_RULE}. A create asking for exactly one of "
                  "them (and the template's disk when none is given) takes a spare.",
    )

    class Meta:
        model = WarmPool
        fields = ("node", "template", "size", "keep", "enabled")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["sizes"].initial = "\n".join(warm.size_label(s) for s in self.instance.vm_sizes)
            # A pool's node and template are what its spares were made for: a new pool instead.
            self.fields["node"].disabled = self.fields["template"].disabled = True

    def clean(self):
        data = super().clean()
        node, template = data.get("node"), data.get("template")
        try:
            if node is not None and template is not None:
                warm.check_pool(node, template)
            data["vm_sizes"] = warm.parse_sizes(data.get("sizes", ""), template)
        except TTError as exc:
            field = exc.field if exc.field in ("node", "template") else "sizes"
            raise ValidationError({field: exc.message}) from exc
        self.instance.vm_sizes = data["vm_sizes"]
        return data


class SpareInline(ReadOnlyTabularInline):
    model = Vm
    fk_name = "warm_pool"
    verbose_name, verbose_name_plural = "spare", "spares"
    fields = ("engine_name", "status", "mac", "ip", "cpu_num", "mem_mb", "disk_mb", "fresh", "created_at")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).live().select_related("node", "template")

    @admin.display(description="current template", boolean=True)
    def fresh(self, vm: Vm) -> bool:
        return vm.warm_key == warm.warm_key_of(vm.template, vm.warm_pool.keep)


@admin.register(WarmPool)
class WarmPoolAdmin(OperateMixin, admin.ModelAdmin):
    form = WarmPoolForm
    list_display = ("__str__", "enabled", "keep", "size", "sizes_shown", "spares_ready", "held")
    list_filter = ("enabled", "node")
    list_select_related = ("node", "template")
    readonly_fields = ("spares_ready", "held", "disk_held", "env", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("node", "template", "size", "sizes", "keep", "enabled")}),
        ("What it holds", {"fields": ("spares_ready", "held", "disk_held", "env", "created_at",
                                      "updated_at")}),
    )
    inlines = (SpareInline,)
    actions = (
        service_action("tend", "Tend the selected pools now (discard stale spares, fill)", "tending queued",
                       lambda pool, by: warm.enqueue_tend(pool.pk), policy_action="warm_pool_tend"),
    )

    def save_model(self, request, obj, form, change):
        warm.pool_save(pool=obj, by=request.user)

    def has_delete_permission(self, request, obj=None):
        # A pool is deleted once it holds no spare (switched off, they are discarded).
        if obj is not None and obj.spares.live().exists():
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request, obj):
        warm.pool_delete(pool=obj, by=request.user)

    def delete_queryset(self, request, queryset):
        for pool in queryset:
            try:
                warm.pool_delete(pool=pool, by=request.user)
            except TTError as exc:
                self.message_user(request, f"{pool}: {exc.message}", messages.ERROR)

    @admin.display(description="VM sizes")
    def sizes_shown(self, pool: WarmPool) -> str:
        return ", ".join(warm.size_label(s) for s in pool.vm_sizes) or "-"

    @admin.display(description="spares")
    def spares_ready(self, pool: WarmPool) -> str:
        held = warm.held_by(pool)
        wanted = pool.size * len(pool.vm_sizes) if pool.enabled else 0
        return f"{held['ready']} ready of {wanted}, {held['filling']} being made, {held['other']} to discard"

    @admin.display(description="capacity held")
    def held(self, pool: WarmPool) -> str:
        held = warm.held_by(pool)
        return f"{held['cpu']} vCPUs, {held['mem_mb']} MiB of the node's memory"

    @admin.display(description="held on the node")
    def disk_held(self, pool: WarmPool) -> str:
        """Each spare's image and saved memory, as the node has them (asked on each view)."""
        spares = list(pool.spares.live().select_related("node", "template", "env"))
        if not spares:
            return "-"
        try:
            engine = get_engine(pool.node)
            specs = [vm.to_spec() for vm in spares]
            disk = [engine.disk_held(spec) for spec in specs]
            memory = [engine.memory_held(spec) for spec in specs]
        except Exception as exc:  # a page view must not fail on an unreachable node
            return f"unknown ({exc.__class__.__name__})"
        return (f"disk: {_per_spare(disk)} (overlay image and saved memory); "
                f"memory: {_per_spare(memory)} resident")


def _per_spare(sizes: list[int | None]) -> str:
    known = [s for s in sizes if s is not None]
    if not known:
        return "unknown (not readable from this host)"
    total = sum(known)
    return f"{total / MIB:.0f} MiB for {len(known)} spares ({total / len(known) / MIB:.0f} MiB each)"
