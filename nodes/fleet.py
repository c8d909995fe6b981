"""Nodes as a fleet: whether each is up, down, drained or disabled; a node whose own
cluster stops beating is marked down, and what was queued for it fails as `node_down`.

Who beats for whom (the beat itself, with what the node has free as placement counts
it, is vms/heartbeat.py):
- a node with a cluster of its own (`Node.own_cluster`, `./tt.sh node-worker NAME`)
  beats from that cluster: its workers' keeper threads every TT_NODE_BEAT s
  (operations/worker.py) and its own django-q2 schedule (`cluster=NAME`, once a minute, in
  case the keepers stall). Its beat is its liveness: one that is TT_NODE_DOWN_AFTER
  beats late is down.
- the site's cluster beats for the nodes it serves itself (one host), and runs the
  sweep here that marks late nodes down. A node it serves is up while the site is: if
  the site's cluster is gone, nothing runs anyway, and operations wait for it.

Down is a state, not a deletion: disks are local, so nothing is evacuated. The VMs
of a down node are shown `unknown`; new VMs go elsewhere; what was queued for the
node fails with `node_down` (settled the way any failed operation is); what a live
worker of the node still holds is left to its lease. The next beat brings the node up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from audit.recording import audited
from engines.errors import ErrorCode, TTError
from nodes.models import Node, NodeHeartbeat
from operations import lease
from operations.models import Operation
from operations.runner import end_now
from ttportal.permissions import check_staff

log = logging.getLogger(__name__)


def beat_lateness(node: Node, now: datetime | None = None) -> str | None:
    """Why a node with a cluster of its own counts as down by its heartbeat (missed
    TT_NODE_DOWN_AFTER beats, or never beat), else None. A node the site's cluster
    serves is never late: it is up while the site is."""
    if not node.own_cluster:
        return None
    beat_at = getattr(getattr(node, "heartbeat", None), "beat_at", None)
    if beat_at is None:
        return "its cluster has never beaten"
    late = ((now or timezone.now()) - beat_at).total_seconds()
    limit = settings.TT_NODE_BEAT * settings.TT_NODE_DOWN_AFTER
    return f"no beat for {late:.0f} s" if late > limit else None



# --- who is down ------------------------------------------------------------------


class State:
    UP, DOWN, DRAINED, DISABLED = "up", "down", "drained", "disabled"


def state_of(node: Node, now: datetime | None = None) -> str:
    """What the fleet view shows (select_related("heartbeat") for many nodes)."""
    if not node.enabled:
        return State.DISABLED
    if node.down_since is not None or beat_lateness(node, now):
        return State.DOWN
    return State.DRAINED if node.drained else State.UP


def set_drained(nodes, drained: bool) -> int:
    """Drain nodes (nothing new is placed there; what runs keeps running and can be
    managed) or take them back. The admin's actions; returns how many changed."""
    return Node.objects.filter(pk__in=[n.pk for n in nodes]).exclude(drained=drained).update(drained=drained)


@audited("node.drain", on="node")
def node_drain(*, node: Node, by) -> bool:
    """An operator drains `node` (the admin's action); whether it changed."""
    check_staff(by, "node_drain")
    return set_drained([node], True) == 1


@audited("node.undrain", on="node")
def node_undrain(*, node: Node, by) -> bool:
    """An operator takes `node` back (the admin's action); whether it changed."""
    check_staff(by, "node_undrain")
    return set_drained([node], False) == 1


def late(node: Node, now: datetime) -> bool:
    return beat_lateness(node, now) is not None


def _beat_at(node: Node) -> datetime | None:
    try:
        return node.heartbeat.beat_at
    except NodeHeartbeat.DoesNotExist:
        return None


@dataclass(frozen=True)
class Swept:
    marked_down: list[str]
    failed_ops: list[int]


def mark_late_nodes_down(now: datetime | None = None) -> Swept:
    """Mark late nodes down and fail what waits for them (the site's cluster runs it)."""
    now = now or timezone.now()
    marked = []
    for node in Node.objects.filter(own_cluster=True, enabled=True).select_related("heartbeat"):
        if (node.down_since is None and late(node, now)
                and Node.objects.filter(pk=node.pk, down_since__isnull=True).update(down_since=now)):
            marked.append(node.name)
            log.warning("node %s is down: no beat since %s", node.name, _beat_at(node) or "ever")
    failed = []
    for op in Operation.objects.filter(status__in=Operation.LIVE, node__down_since__isnull=False):
        if fail_if_waiting(op, now):
            failed.append(op.pk)
    return Swept(marked, failed)


def fail_if_waiting(op: Operation, now: datetime) -> bool:
    """Fail a live operation of a down node unless a live worker holds it (then its
    lease decides: a worker that is still there finishes)."""
    if op.status == Operation.Status.RUNNING and not lease.is_void(op, now):
        return False
    node_name = op.node.name if op.node_id else "?"
    error = TTError(f"node {node_name} is down: its task cluster stopped beating, so nothing runs "
                    f"there until it beats again", code=ErrorCode.NODE_DOWN)
    # No transaction around it: settling asks the engine, and end_now's writes are fenced.
    ended = end_now(op, error)
    if ended:
        log.warning("operation %s (%s) failed: node %s is down", op.pk, op.kind, node_name)
    return ended


# --- the broker's side -------------------------------------------------------------


def queue_depths(names: list[str]) -> dict[str, int | None]:
    """Tasks waiting in each named queue (a node's cluster, or the site's); None when the
    broker cannot say. One query (ORM broker) or one pipeline (Redis) for all of them."""
    from django_q.brokers import get_broker

    broker = get_broker()
    try:
        if "redis" in settings.Q_CLUSTER:
            pipe = broker.connection.pipeline()
            for name in names:
                pipe.llen(_redis_key(name))
            return dict(zip(names, pipe.execute(), strict=True))
        from django.db.models import Count
        from django_q.models import OrmQ

        waiting = OrmQ.objects.filter(key__in=names, lock__lte=timezone.now())  # not taken yet
        counts = dict(waiting.values_list("key").annotate(n=Count("id")))
        return {name: counts.get(name, 0) for name in names}
    except Exception:
        log.exception("could not read the queue depths")
        return dict.fromkeys(names)


def _redis_key(name: str) -> str:
    # django-q2's Redis broker keeps each queue in the list named by its list_key.
    return f"django_q:{name}:q"


def site_queue() -> str:
    return settings.Q_CLUSTER["name"]
