"""A node's heartbeat: its cluster writes, every few seconds, what the node has free as
placement counts it (vms/placement.py), whether its engine answers, and the host's
size. Liveness, drain and the sweep that marks late nodes down are nodes/fleet.py.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime

from django.utils import timezone

from engines.specs import DiskSpace
from nodes.models import Node, NodeHeartbeat
from nodes.registry import get_engine
from operations import lease
from vms.models import Vm
from vms.placement import Placer, free_mem, usable_addresses

log = logging.getLogger(__name__)


def write_heartbeat(node: Node, now: datetime | None = None) -> NodeHeartbeat:
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


def beat_served_nodes(now: datetime | None = None) -> int:
    """The site's cluster: beat for each enabled node it serves (no cluster of its own)."""
    count = 0
    for node in Node.objects.filter(own_cluster=False, enabled=True):
        try:
            write_heartbeat(node, now)
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
    write_heartbeat(node)
    return True


