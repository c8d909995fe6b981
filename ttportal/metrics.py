"""/metrics: the portal's state in Prometheus' text format, read from the database
at scrape time.

Several web processes answer scrapes in turn, so nothing is counted in memory per
request: one collector asks the database the same constant number of queries
whatever the number of VMs, nodes and operations, and asks each node that has
live VMs for its firewall's drop counters (bounded in time: ttportal.probes; a node
that cannot be asked is left out and counted in tt_node_scrape_errors).

Who may read it: a staff user's session, or a client whose address is in
TT_METRICS_ALLOWED (as the trusted proxies report it: ttportal.proxy). Anyone
else gets 403.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from engines.models import Node
from envs.models import Env
from operations import registry
from operations.models import Operation
from ttportal import permissions, probes
from ttportal.proxy import client_address, in_networks
from vms import fleet
from vms.blocked import REASONS, drops_of_nodes
from vms.models import PortMapping, Vm, live_vms

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Upper bounds (seconds) of the operation duration buckets: network changes take
# well under a second, a VM's create or a snapshot of a big disk minutes.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
EXPIRING_WITHIN = timedelta(hours=1)


class PortalCollector:
    """Every family, built from the database at each scrape."""

    def collect(self):
        now = timezone.now()
        nodes = list(
            Node.objects.select_related("heartbeat").annotate(
                live_vm_count=Count("vms", filter=live_vms()),
                cpu_used=Sum("vms__cpu_num", filter=live_vms(), default=0),
                mem_used=Sum("vms__mem_mb", filter=live_vms(), default=0),
            ).order_by("name")
        )
        yield from self.vms(nodes)
        yield from self.nodes(nodes)
        yield from self.fleet(nodes, now)
        yield from self.envs(now)
        yield from self.operations()
        yield from self.queue(nodes)
        yield from self.blocked(nodes)
        yield self.warm_spares()

    # --- VMs and nodes ------------------------------------------------------------
    def vms(self, nodes: list[Node]):
        counts = {(row["node"], row["status"]): row["n"]
                  for row in Vm.objects.values("node", "status").annotate(n=Count("id")).order_by()}
        family = GaugeMetricFamily("tt_vms", "VMs by status and node (destroyed ones included).",
                                   labels=["status", "node"])
        for node in nodes:
            for status in Vm.Status.values:
                family.add_metric([status, node.name], counts.get((node.pk, status), 0))
        yield family

    def nodes(self, nodes: list[Node]):
        ports = {(row["node"], row["protocol"]): row["n"]
                 for row in PortMapping.objects.values("node", "protocol").annotate(n=Count("id")).order_by()}
        enabled = GaugeMetricFamily("tt_node_enabled", "1 when new VMs may be placed on the node.",
                                    labels=["node", "engine"])
        live = GaugeMetricFamily("tt_node_live_vms", "VMs not destroyed on the node.", labels=["node"])
        states = (("capacity", "offered (0: unlimited)"), ("used", "used by live VMs"),
                  ("free", "still free (no sample for an unlimited node)"))
        families = {(what, state): GaugeMetricFamily(name.format(state), f"{doc} {note}.", labels=["node"])
                    for what, name, doc in (("vcpus", "tt_node_vcpus_{}", "vCPUs"),
                                            ("memory", "tt_node_memory_{}_bytes", "Memory (bytes)"))
                    for state, note in states}
        ports_used = GaugeMetricFamily("tt_node_ports_used", "Public ports forwarded, per protocol.",
                                       labels=["node", "protocol"])
        ports_free = GaugeMetricFamily("tt_node_ports_free", "Public ports still free, per protocol.",
                                       labels=["node", "protocol"])
        for node in nodes:
            enabled.add_metric([node.name, node.kind], 1 if node.enabled else 0)
            live.add_metric([node.name], node.live_vm_count)
            for what, capacity, used in (("vcpus", node.cpu_capacity, node.cpu_used),
                                         ("memory", node.mem_capacity_mb * MIB, node.mem_used * MIB)):
                families[what, "capacity"].add_metric([node.name], capacity)
                families[what, "used"].add_metric([node.name], used)
                if capacity:
                    families[what, "free"].add_metric([node.name], max(0, capacity - used))
            size = node.port_max - node.port_min + 1
            for protocol in PortMapping.Protocol.values:
                used = ports.get((node.pk, protocol), 0)
                ports_used.add_metric([node.name, protocol], used)
                ports_free.add_metric([node.name, protocol], max(0, size - used))
        yield from (enabled, live, *families.values(), ports_used, ports_free)

    def fleet(self, nodes: list[Node], now):
        state = GaugeMetricFamily(
            "tt_node_state", "1 for the node's state (up, down, drained, disabled), 0 for the others.",
            labels=["node", "state"])
        age = GaugeMetricFamily(
            "tt_node_heartbeat_age_seconds", "Seconds since the node's cluster last beat (none: never).",
            labels=["node"])
        for node in nodes:
            current = fleet.state_of(node, now)
            for name in (fleet.State.UP, fleet.State.DOWN, fleet.State.DRAINED, fleet.State.DISABLED):
                state.add_metric([node.name, name], 1 if name == current else 0)
            beat = getattr(node, "heartbeat", None)
            if beat is not None:
                age.add_metric([node.name], max(0.0, (now - beat.beat_at).total_seconds()))
        yield from (state, age)

    def warm_spares(self) -> GaugeMetricFamily:
        """Each warm pool's live spares by status (suspended: ready to be taken)."""
        family = GaugeMetricFamily("tt_warm_spares", "Live spares of each warm pool, by status.",
                                   labels=["node", "template", "status"])
        rows = (Vm.objects.live().filter(warm_pool__isnull=False)
                .values_list("warm_pool__node__name", "warm_pool__template__name", "status")
                .annotate(n=Count("id")).order_by())
        for node, template, status, n in rows:
            family.add_metric([node, template, status], n)
        return family

    # --- Envs -----------------------------------------------------------------------
    def envs(self, now):
        counts = dict(Env.objects.values_list("status").annotate(n=Count("id")).order_by())
        family = GaugeMetricFamily("tt_envs", "Envs by status.", labels=["status"])
        for status in Env.Status.values:
            family.add_metric([status], counts.get(status, 0))
        yield family
        expiring = Env.objects.filter(status=Env.Status.ACTIVE, end_at__gte=now,
                                      end_at__lt=now + EXPIRING_WITHIN).count()
        yield GaugeMetricFamily("tt_envs_expiring_next_hour",
                                "Active Envs whose end comes within the next hour.", value=expiring)

    # --- operations -------------------------------------------------------------------
    def operations(self):
        counts = {(row["kind"], row["status"]): row["n"]
                  for row in Operation.objects.values("kind", "status").annotate(n=Count("id")).order_by()}
        family = GaugeMetricFamily("tt_operations", "Operations by kind and status.",
                                   labels=["kind", "status"])
        for kind in registry.kind_values():
            for status in Operation.Status.values:
                family.add_metric([kind, status], counts.get((kind, status), 0))
        yield family
        yield self.durations()

    def durations(self) -> HistogramMetricFamily:
        """Every finished operation (all of them, not a window: the counts only grow, as a
        Prometheus histogram's must; rate() over the buckets picks the window), from its
        started and finished times, counted into fixed buckets by the database."""
        took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        buckets = {f"le_{i}": Count("id", filter=Q(took__lte=timedelta(seconds=bound)))
                   for i, bound in enumerate(DURATION_BUCKETS)}
        rows = (
            Operation.objects.filter(status__in=Operation.DONE, started_at__isnull=False,
                                     finished_at__isnull=False)
            .annotate(took=took).values("kind", "status")
            .annotate(n=Count("id"), total=Sum("took"), **buckets).order_by("kind", "status")
        )
        family = HistogramMetricFamily(
            "tt_operation_duration_seconds",
            "How long finished operations ran, from their start to their end, by kind and status.",
            labels=["kind", "status"],
        )
        for row in rows:
            counts = [(floatToGoString(bound), row[f"le_{i}"]) for i, bound in enumerate(DURATION_BUCKETS)]
            total = row["total"].total_seconds() if row["total"] is not None else 0.0
            family.add_metric([row["kind"], row["status"]], [*counts, ("+Inf", row["n"])], max(0.0, total))
        return family

    # --- task queue -------------------------------------------------------------------
    def queue(self, nodes: list[Node]):
        """Tasks waiting in the site's queue and in each node's own (vms/fleet.py)."""
        errors = GaugeMetricFamily("tt_scrape_errors", "Parts of this scrape that could not be read.",
                                   labels=["source"])
        queues = [fleet.site_queue(), *(node.name for node in nodes if node.own_cluster)]
        if "redis" in settings.Q_CLUSTER:  # Redis can hang on a dead route: bounded
            outcome = probes.ask(("broker", "queue_depths"), lambda: fleet.queue_depths(queues), ttl=0)
            depths = outcome.value if outcome.ok else dict.fromkeys(queues)
        else:  # the ORM broker's queue is a table of the database
            depths = fleet.queue_depths(queues)
        if any(depth is None for depth in depths.values()):
            errors.add_metric(["task_queue"], 1)
        else:
            errors.add_metric(["task_queue"], 0)
            depth_family = GaugeMetricFamily("tt_task_queue_depth", "Tasks waiting in the django-q2 broker.",
                                             labels=["queue"])
            for queue, depth in depths.items():
                depth_family.add_metric([queue], depth)
            yield depth_family
        yield errors

    # --- what the firewalls refused ---------------------------------------------------
    def blocked(self, nodes: list[Node]):
        vms = list(Vm.objects.filter(live_vms(""), ip__isnull=False).values_list("pk", "ip", "node"))
        with_vms = {node_id for _, _, node_id in vms}
        asked = [node for node in nodes if node.pk in with_vms]  # a node without VMs has nothing to say
        drops = drops_of_nodes(asked)
        family = CounterMetricFamily(
            "tt_vm_blocked_packets",
            "Packets a VM sent that its node's firewall dropped: to the outside while its Env "
            "denies outgoing traffic (egress_denied), to an address on its blacklist (blacklisted), or to "
            "a network no VM may reach: private, a node's, the site's services (private_network).",
            labels=["vm", "node", "reason"],
        )
        errors = GaugeMetricFamily("tt_node_scrape_errors",
                                   "1 when the node's firewall could not be asked in this scrape.",
                                   labels=["node"])
        names = {node.pk: node.name for node in asked}
        for node in asked:
            errors.add_metric([node.name], 0 if drops[node.pk] is not None else 1)
        for pk, ip, node_id in vms:
            counted = drops.get(node_id)
            if counted is None:
                continue
            per_reason = counted.get(ip) or {}
            for reason in REASONS:
                family.add_metric([str(pk), names[node_id], reason], per_reason.get(reason, 0))
        yield family
        yield errors


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(PortalCollector())


def may_read(request: HttpRequest) -> bool:
    if permissions.may(request.user, "node_view"):
        return True
    return in_networks(client_address(request), settings.TT_METRICS_ALLOWED)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not may_read(request):
        return HttpResponse("metrics: staff only, or from an address in TT_METRICS_ALLOWED\n",
                            status=403, content_type="text/plain; charset=utf-8")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encoder(REGISTRY), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
