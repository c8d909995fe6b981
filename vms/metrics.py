"""The VMs' families of /metrics: VMs by status and node, what each node's live VMs use
of its vCPUs, memory and ports, what the firewalls dropped per VM, and the warm pools'
spares (registered by VmsConfig.ready())."""

from __future__ import annotations

from django.db.models import Count, Sum
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from nodes.models import Node
from ttportal.metrics import MIB
from vms.blocked import REASONS, drops_of_nodes
from vms.models import PortMapping, Vm, live_vms


class VmCollector:
    def collect(self):
        nodes = list(
            Node.objects.annotate(
                live_vm_count=Count("vms", filter=live_vms()),
                cpu_used=Sum("vms__cpu_num", filter=live_vms(), default=0),
                mem_used=Sum("vms__mem_mb", filter=live_vms(), default=0),
            ).order_by("name")
        )
        yield self.vms(nodes)
        yield from self.usage(nodes)
        yield from self.blocked(nodes)
        yield self.warm_spares()

    def vms(self, nodes: list[Node]) -> GaugeMetricFamily:
        counts = {(row["node"], row["status"]): row["n"]
                  for row in Vm.objects.values("node", "status").annotate(n=Count("id")).order_by()}
        family = GaugeMetricFamily("tt_vms", "VMs by status and node (destroyed ones included).",
                                   labels=["status", "node"])
        for node in nodes:
            for status in Vm.Status.values:
                family.add_metric([status, node.name], counts.get((node.pk, status), 0))
        return family

    def usage(self, nodes: list[Node]):
        ports = {(row["node"], row["protocol"]): row["n"]
                 for row in PortMapping.objects.values("node", "protocol").annotate(n=Count("id")).order_by()}
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
        yield from (live, *families.values(), ports_used, ports_free)

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

    def blocked(self, nodes: list[Node]):
        """What the firewalls refused, asked of each node that has live VMs (bounded in
        time: ttportal.probes; a node that cannot be asked is left out and counted in
        tt_node_scrape_errors)."""
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
