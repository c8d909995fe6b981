"""The nodes' families of /metrics: which node takes VMs, each node's fleet state and
heartbeat, and the task queues' depths (registered by NodesConfig.ready())."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from nodes import fleet
from nodes.models import Node
from ttportal import probes


class NodeCollector:
    def collect(self):
        now = timezone.now()
        nodes = list(Node.objects.select_related("heartbeat").order_by("name"))
        yield self.enabled(nodes)
        yield from self.fleet(nodes, now)
        yield from self.queue(nodes)

    def enabled(self, nodes: list[Node]) -> GaugeMetricFamily:
        family = GaugeMetricFamily("tt_node_enabled", "1 when new VMs may be placed on the node.",
                                   labels=["node", "engine"])
        for node in nodes:
            family.add_metric([node.name, node.kind], 1 if node.enabled else 0)
        return family

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

    def queue(self, nodes: list[Node]):
        """Tasks waiting in the site's queue and in each node's own (nodes/fleet.py)."""
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
