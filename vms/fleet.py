"""Nodes as a fleet: each node's cluster beats with what it has free, a node that stops
beating is down, and what was queued for it fails as `node_down`.

Who beats for whom:
- a node with a cluster of its own (`Node.own_cluster`, `./tt.sh node-worker NAME`)
  beats from that cluster: its workers' keeper threads every TT_NODE_BEAT s
  (operations/worker.py) and its own django-q2 schedule (`cluster=NAME`, once a minute, in
  case the keepers stall). Its beat is its liveness: one that is TT_NODE_DOWN_AFTER
  beats late is down.
- the site's cluster beats for the nodes it serves itself (one host), and runs the
  sweep that marks late nodes down. A node it serves is up while the site is: if the
  site's cluster is gone, nothing runs anyway, and operations wait for it.

Down is a state, not a deletion: disks are local, so nothing is evacuated. The VMs
of a down node are shown `unknown`; new VMs go elsewhere; what was queued for the
node fails with `node_down` (settled the way any failed operation is); what a live
worker of the node still holds is left to its lease. The next beat brings the node up.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from engines.errors import ErrorCode, TTError
from engines.models import Node, NodeHeartbeat
from engines.registry import get_engine
from engines.specs import DiskSpace
from operations import lease
from operations.models import Operation
from operations.runner import end_now
from vms.models import Vm
from vms.placement import Placer, beat_lateness, free_mem, usable_addresses

log = logging.getLogger(__name__)


def beat(node: Node, now: datetime | None = None) -> NodeHeartbeat:
    """Write the node's heartbeat with its free capacity, and bring it up if it was down."""
    now = now or timezone.now()
    placer = Placer(only=[node.pk])
    node = next(iter(placer.nodes()), node)
    load = placer.load_of(node)
    size = node.port_max - node.port_min + 1
    engine_ok, note, running = _engine_view(node)
    space = disk_space(node)
    fields = dict(
        beat_at=now,
        worker=lease.identity(),
        cpu_free=node.cpu_capacity - load.cpu if node.cpu_capacity else None,
        mem_free_mb=free_mem(node, load) if node.mem_capacity_mb else None,
        ports_free=size - max(load.ports["tcp"], load.ports["udp"]),
        addresses_free=usable_addresses(node) - load.vms,
        vms_running=running,
        host_cpus=os.cpu_count() or 0,
        host_mem_mb=_host_mem_mb(),
        engine_ok=engine_ok,
        engine_note=note[:500],
        disk_total_mb=space.total_mb if space else None,
        disk_free_mb=space.free_mb if space else None,
    )
    heartbeat, _ = NodeHeartbeat.objects.update_or_create(node=node, defaults=fields)
    # Only a down node's row is written: a beat never waits on a placement's lock otherwise.
    if Node.objects.filter(pk=node.pk, down_since__isnull=False).update(down_since=None):
        log.warning("node %s beats again: up", node.name)
    return heartbeat


def _engine_view(node: Node) -> tuple[bool, str, int]:
    """(engine usable, what it said, instances running). The running count is the
    database's when the engine cannot be asked: a beat says the cluster lives, and an
    engine that is down is told in the note (and by the operations that fail)."""
    running = Vm.objects.filter(node=node, status=Vm.Status.RUNNING).count()
    if node.is_test_driver:
        return True, "libvirt test driver", running
    try:
        ok, note = get_engine(node).health()
    except Exception as exc:  # the beat must still be written
        return False, f"{exc.__class__.__name__}: {exc}", running
    return ok, note, running


def disk_space(node: Node) -> DiskSpace | None:
    """The filesystem holding the node's guest disks, as its engine reports it; None when
    it cannot say (then placement checks the node's disk_capacity_mb alone). The test
    driver's pool is make-believe: not asked."""
    if node.is_test_driver:
        return None
    try:
        return get_engine(node).disk_space()
    except Exception:  # the beat must still be written
        log.exception("could not read the disk space of node %s", node.name)
        return None


def _host_mem_mb() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


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


def sweep(now: datetime | None = None) -> Swept:
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


def beat_served_nodes(now: datetime | None = None) -> int:
    """The site's cluster: beat for each enabled node it serves (no cluster of its own)."""
    count = 0
    for node in Node.objects.filter(own_cluster=False, enabled=True):
        try:
            beat(node, now)
            count += 1
        except Exception:
            log.exception("could not beat for node %s", node.name)
    return count


def beat_named(name: str) -> bool:
    """A node's own cluster: beat for its node (False when no such node)."""
    node = Node.objects.filter(name=name).first()
    if node is None:
        log.error("this cluster is named %s, but no node has that name", name)
        return False
    beat(node)
    return True


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
