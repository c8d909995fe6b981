"""Nodes in the admin: the fleet. Where engines run, whether each node's cluster still
beats, what it had free at its last beat, and what waits in its queue.

What the VMs use on each node, and reconciling a node's VMs, are vms' to show and do:
vms/node_admin.py extends this admin with them and registers the extended one."""

from __future__ import annotations

import threading

from django.contrib import admin, messages
from django.utils import timezone

from nodes import fleet
from nodes.models import Node
from nodes.registry import forget_engines, node_health
from ttportal.admin_actions import OperateMixin, allowed, policy_bound

TEST_DRIVER_WARNING = "libvirt test driver: boots nothing; for tests only"

# The queue depths of the change list being drawn: read from the broker once per page
# (one query or one Redis pipeline), not once per row. Per thread: one request each.
_page = threading.local()


@admin.register(Node)
class NodeAdmin(OperateMixin, admin.ModelAdmin):
    list_display = (
        "name", "kind", "state", "last_beat", "queue_depth", "port_range", "public_host", "vm_network",
        "driver_warning",
    )
    list_filter = ("kind", "enabled", "drained", "own_cluster")
    search_fields = ("name", "uri", "public_host", "notes")
    actions = ("drain", "undrain")
    readonly_fields = ("driver_warning", "health", "state", "last_beat", "beat_detail", "queue_depth",
                       "down_since", "created_at")
    fieldsets = (
        (None, {"fields": ("driver_warning", "name", "kind", "uri", "health", "enabled", "notes")}),
        ("Fleet", {"fields": (("state", "down_since"), "drained", "own_cluster", "last_beat", "beat_detail",
                              "queue_depth")}),
        ("Network", {"fields": ("public_host", "vm_network", "mac_prefix", "network_name", "bridge",
                                ("port_min", "port_max"))}),
        ("Storage", {"fields": ("pool_name",)}),
        ("Firecracker", {"fields": ("binary", "jailer"),
                         "description": "Firecracker nodes only: the binaries VMs are started with."}),
        ("Capacity", {"fields": (("cpu_capacity", "mem_capacity_mb", "disk_capacity_mb"),)}),
        ("Record", {"fields": ("created_at",)}),
    )

    @admin.action(description="Drain: place nothing new there (what runs keeps running)")
    def drain(self, request, queryset):
        if not allowed(self, request, "node_drain"):
            return
        changed = sum(fleet.node_drain(node=node, by=request.user) for node in queryset)
        self.message_user(request, f"{changed} nodes drained", messages.SUCCESS)

    @admin.action(description="Undrain: place new VMs there again")
    def undrain(self, request, queryset):
        if not allowed(self, request, "node_undrain"):
            return
        changed = sum(fleet.node_undrain(node=node, by=request.user) for node in queryset)
        self.message_user(request, f"{changed} nodes take new VMs again", messages.SUCCESS)

    policy_bound(drain, "node_drain")
    policy_bound(undrain, "node_undrain")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("heartbeat")

    @admin.display(description="ports")
    def port_range(self, node: Node) -> str:
        return f"{node.port_min}-{node.port_max}"

    @admin.display(description="state")
    def state(self, node: Node) -> str:
        if not node.pk:
            return ""
        state = fleet.state_of(node)
        if state == fleet.State.DOWN:
            why = f"since {timezone.localtime(node.down_since):%Y-%m-%d %H:%M:%S}" if node.down_since else (
                fleet.beat_lateness(node) or "")
            return f"down ({why})"
        return state

    @admin.display(description="last heartbeat", ordering="heartbeat__beat_at")
    def last_beat(self, node: Node) -> str:
        beat = getattr(node, "heartbeat", None) if node.pk else None
        if beat is None:
            return "never"
        age = (timezone.now() - beat.beat_at).total_seconds()
        who = "its own cluster" if node.own_cluster else "the site's cluster"
        return f"{age:.0f} s ago ({who})"

    @admin.display(description="free, as last beaten")
    def beat_detail(self, node: Node) -> str:
        beat = getattr(node, "heartbeat", None) if node.pk else None
        if beat is None:
            return "no heartbeat yet"
        cpu = "∞" if beat.cpu_free is None else beat.cpu_free
        mem = "∞" if beat.mem_free_mb is None else f"{beat.mem_free_mb} MiB"
        engine = "engine answers" if beat.engine_ok else "engine does not answer"
        disk = ("unknown" if beat.disk_free_mb is None
                else f"{beat.disk_free_mb} MiB of {beat.disk_total_mb} MiB on its filesystem")
        return (f"vCPUs {cpu}, memory {mem}, disk {disk}, ports {beat.ports_free}, "
                f"addresses {beat.addresses_free}; "
                f"{beat.vms_running} running; host {beat.host_cpus} CPUs, {beat.host_mem_mb} MiB; "
                f"{engine}: {beat.engine_note}; worker {beat.worker}")

    @admin.display(description="queue")
    def queue_depth(self, node: Node) -> str:
        if not node.pk:
            return ""
        queue = node.name if node.own_cluster else fleet.site_queue()
        depths = getattr(_page, "depths", None)
        if depths is None or queue not in depths:
            depths = fleet.queue_depths([queue])
        depth = depths.get(queue)
        shown = "?" if depth is None else str(depth)
        return shown if node.own_cluster else f"{shown} (site queue)"

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
        queues = [fleet.site_queue(), *Node.objects.filter(own_cluster=True).values_list("name", flat=True)]
        _page.depths = fleet.queue_depths(queues)
        try:
            response = super().changelist_view(request, extra_context)
            if hasattr(response, "render"):
                response.render()  # the rows are drawn here, while the depths are set
            return response
        finally:
            _page.depths = None

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.is_test_driver:
            self.message_user(request, f"{obj.name}: {TEST_DRIVER_WARNING}", messages.WARNING)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # Engines are cached per process with the node's options: let this one
        # pick up the new settings (workers pick them up when they recycle).
        forget_engines()

