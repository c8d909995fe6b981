"""Nodes in the admin: where engines run, and how much of each is in use."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce

from engines.models import Node
from engines.registry import driver_class, forget_engines, node_options
from vms.models import PortMapping, live_vms

TEST_DRIVER_WARNING = "libvirt test driver: boots nothing; for tests only"

# Fields that describe where the node's existing VMs live: changing them under
# live VMs would orphan their domains, images and derived addresses.
LOCKED_WHILE_IN_USE = ("kind", "uri", "vm_network", "mac_prefix", "pool_name", "network_name", "bridge")


def _ports_used(protocol: str):
    # A subquery, not a second join: joining both vms and port_mappings would
    # multiply the rows each aggregate counts.
    used = (
        PortMapping.objects.filter(node=OuterRef("pk"), protocol=protocol)
        .order_by()
        .values("node")
        .annotate(n=Count("pk"))
        .values("n")[:1]
    )
    return Coalesce(Subquery(used), 0)


def _of(used: int, capacity: int, unit: str = "") -> str:
    return f"{used} / {capacity if capacity else '∞'}{unit}"


def node_health(node: Node) -> tuple[bool, str]:
    """The node's driver's own check (VmEngine.health), through a driver that is not
    initialised: a page view must not set up a node. Whatever goes wrong (an unknown kind,
    a daemon that does not answer, a driver bug) is the finding, never a failed page."""
    try:
        return driver_class(node.kind)(uri=node.uri, options=node_options(node)).health()
    except Exception as exc:
        return False, f"{exc.__class__.__name__}: {exc}"


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = (
        "name", "kind", "uri", "public_host", "vm_network", "port_range", "enabled",
        "live_vm_count", "cpu_in_use", "mem_in_use", "ports_in_use", "driver_warning",
    )
    list_filter = ("kind", "enabled")
    search_fields = ("name", "uri", "public_host", "notes")
    actions = ("reconcile",)
    readonly_fields = ("driver_warning", "health", "live_vm_count", "cpu_in_use", "mem_in_use",
                       "ports_in_use", "created_at")
    fieldsets = (
        (None, {"fields": ("driver_warning", "name", "kind", "uri", "health", "enabled", "notes")}),
        ("Network", {"fields": ("public_host", "vm_network", "mac_prefix", "network_name", "bridge",
                                ("port_min", "port_max"))}),
        ("Storage", {"fields": ("pool_name",)}),
        ("Firecracker", {"fields": ("binary", "jailer"),
                         "description": "Firecracker nodes only: the binaries VMs are started with."}),
        ("Capacity", {"fields": (("cpu_capacity", "mem_capacity_mb"),
                                 ("live_vm_count", "cpu_in_use", "mem_in_use", "ports_in_use"))}),
        ("Record", {"fields": ("created_at",)}),
    )

    @admin.action(description="Reconcile: record what the node really runs, rewrite its firewall")
    def reconcile(self, request, queryset):
        from vms.reconcile import reconcile_node

        for node in queryset:
            try:
                drifted = reconcile_node(node.pk)
            except Exception as exc:  # an unreachable node: say so, go on with the others
                self.message_user(request, f"{node}: {exc.__class__.__name__}: {exc}", messages.ERROR)
                continue
            level = messages.WARNING if drifted else messages.SUCCESS
            self.message_user(request, f"{node}: {drifted} VMs had drifted (see their operations)", level)

    def get_queryset(self, request):
        # What scheduling counts as using a node (vms.specs.pick_node): its live VMs.
        return super().get_queryset(request).annotate(
            live_vms=Count("vms", filter=live_vms()),
            cpu_used=Sum("vms__cpu_num", filter=live_vms(), default=0),
            mem_used=Sum("vms__mem_mb", filter=live_vms(), default=0),
            tcp_used=_ports_used(PortMapping.Protocol.TCP),
            udp_used=_ports_used(PortMapping.Protocol.UDP),
        )

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if obj is not None and getattr(obj, "live_vms", 0):
            fields = (*fields, *LOCKED_WHILE_IN_USE)
        return fields

    @admin.display(description="ports")
    def port_range(self, node: Node) -> str:
        return f"{node.port_min}-{node.port_max}"

    @admin.display(description="live VMs", ordering="live_vms")
    def live_vm_count(self, node: Node) -> int:
        return getattr(node, "live_vms", 0)

    @admin.display(description="vCPUs used", ordering="cpu_used")
    def cpu_in_use(self, node: Node) -> str:
        return _of(getattr(node, "cpu_used", 0), node.cpu_capacity)

    @admin.display(description="memory used", ordering="mem_used")
    def mem_in_use(self, node: Node) -> str:
        return _of(getattr(node, "mem_used", 0), node.mem_capacity_mb, " MiB")

    @admin.display(description="public ports used")
    def ports_in_use(self, node: Node) -> str:
        size = node.port_max - node.port_min + 1 if node.port_min and node.port_max else 0
        tcp, udp = getattr(node, "tcp_used", 0), getattr(node, "udp_used", 0)
        # Each protocol has the whole range to itself.
        return f"tcp {tcp} / {size}, udp {udp} / {size}"

    @admin.display(description="health")
    def health(self, node: Node) -> str:
        """What the node's engine says of itself now (asked on each view: never cached)."""
        if not node.pk:  # the add page: no node yet
            return ""
        ok, message = node_health(node)
        return f"{'✔' if ok else '✘'} {message}"

    @admin.display(description="warning")
    def driver_warning(self, node: Node) -> str:
        return TEST_DRIVER_WARNING if node.pk and node.is_test_driver else ""

    def changelist_view(self, request, extra_context=None):
        if request.method == "GET":
            names = list(Node.objects.filter(uri__startswith="test://").values_list("name", flat=True))
            if names:
                self.message_user(request, f"{', '.join(names)}: {TEST_DRIVER_WARNING}", messages.WARNING)
        return super().changelist_view(request, extra_context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.is_test_driver:
            self.message_user(request, f"{obj.name}: {TEST_DRIVER_WARNING}", messages.WARNING)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # Engines are cached per process with the node's options: let this one
        # pick up the new settings (workers pick them up when they recycle).
        forget_engines()
