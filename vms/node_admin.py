"""The nodes' admin (nodes/admin.py) with what the VMs use on each node: live and running
VMs, vCPUs, memory and public ports against the node's capacity; the fields that say
where those VMs live locked while there are any; and the action that reconciles a
node's VMs with what its engine really runs. Registered in place of the nodes' own."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce

from nodes.admin import NodeAdmin
from nodes.models import Node
from ttportal.admin_actions import allowed, policy_bound
from vms.models import PortMapping, Vm, live_vms

# Fields that describe where the node's existing VMs live: changing them under
# live VMs would orphan their domains, images and derived addresses.
LOCKED_WHILE_IN_USE = ("kind", "uri", "vm_network", "mac_prefix", "pool_name", "network_name", "bridge")

USAGE = ("live_vm_count", "running_count", "cpu_in_use", "mem_in_use", "ports_in_use")


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
    if not capacity:
        return f"{used} / ∞{unit}"
    return f"{used} / {capacity}{unit} ({capacity - used} free)"


def _with_usage(fieldsets: tuple) -> tuple:
    """The nodes' fieldsets, the VMs' use shown under the capacity it is measured against."""
    shown = ("live_vm_count", "cpu_in_use", "mem_in_use", "ports_in_use")
    return tuple(
        (name, {**options, "fields": (*options["fields"], shown)}) if name == "Capacity" else (name, options)
        for name, options in fieldsets
    )


class NodeUsageAdmin(NodeAdmin):
    # After the queue, before the node's addresses: where the nodes' own list had them.
    list_display = (*NodeAdmin.list_display[:5], *USAGE, *NodeAdmin.list_display[5:])
    actions = ("reconcile", *NodeAdmin.actions)
    readonly_fields = (*NodeAdmin.readonly_fields, *USAGE)
    fieldsets = _with_usage(NodeAdmin.fieldsets)

    @admin.action(description="Reconcile: record what the node really runs, rewrite its firewall")
    def reconcile(self, request, queryset):
        from vms.reconcile import node_reconcile

        if not allowed(self, request, "node_reconcile"):
            return
        for node in queryset:
            try:
                drifted = node_reconcile(node=node, by=request.user)
            except Exception as exc:  # an unreachable node: say so, go on with the others
                self.message_user(request, f"{node}: {exc.__class__.__name__}: {exc}", messages.ERROR)
                continue
            level = messages.WARNING if drifted else messages.SUCCESS
            self.message_user(request, f"{node}: {drifted} VMs had drifted (see their operations)", level)

    policy_bound(reconcile, "node_reconcile")

    def get_queryset(self, request):
        # What scheduling counts as using a node (vms.placement): its live VMs.
        running = Q(vms__status=Vm.Status.RUNNING)
        return super().get_queryset(request).annotate(
            running_vms=Count("vms", filter=running),
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

    @admin.display(description="live VMs", ordering="live_vms")
    def live_vm_count(self, node: Node) -> int:
        return getattr(node, "live_vms", 0)

    @admin.display(description="running", ordering="running_vms")
    def running_count(self, node: Node) -> int:
        return getattr(node, "running_vms", 0)

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


# nodes' admin registered the nodes first (nodes is installed before vms).
admin.site.unregister(Node)
admin.site.register(Node, NodeUsageAdmin)
