"""The disk watchdog: where the engine cannot limit a VM's writable storage (a container's
layer on overlay over ext4, as on this host: only overlay over xfs with project quotas,
btrfs and zfs take a size), a periodic pass stops each running VM that has written more
than its disk_mb. The stop is an operation of its own (`vm_disk_stop`) that fails as
`disk_exceeded`, so its log says why and the owner is told, as for any failed operation.

One node per step (watch_node), one engine call per node for every VM's size; the
decision (over_limit) is a plain function. Nodes whose engine bounds disks itself (disk
images of a fixed size) are not asked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from engines.specs import MIB
from nodes.models import Node
from nodes.registry import driver_class, get_engine
from operations.models import Operation
from vms.models import Vm
from vms.services import vm_stop_for_disk

log = logging.getLogger(__name__)


def over_limit(vms: Iterable[Vm], sizes: dict[str, int]) -> list[tuple[Vm, int]]:
    """(VM, MiB written, rounded up) for each VM whose writable storage holds more than
    its disk; a VM the engine did not report is not judged."""
    found = []
    for vm in vms:
        written = sizes.get(vm.engine_name)
        if written is not None and written > vm.disk_mb * MIB:
            found.append((vm, -(-written // MIB)))
    return found


def watched_nodes() -> list[int]:
    """Enabled nodes that are not down, whose engine does not bound disks itself."""
    nodes = Node.objects.filter(enabled=True, down_since__isnull=True).only("pk", "kind")
    return [node.pk for node in nodes if not driver_class(node.kind).bounds_disks]


def watch_node(node_id: int) -> list[Operation]:
    """One node: its VMs' writable storage read in one call; each running one past its
    disk stopped (an operation each)."""
    node = Node.objects.get(pk=node_id)
    sizes = get_engine(node).writable_sizes(f"tt-{node.name}-")
    if sizes is None:
        return []
    running = Vm.objects.filter(node=node, status=Vm.Status.RUNNING).select_related("node", "env")
    stopped = []
    for vm, used_mb in over_limit(running, sizes):
        log.warning("%s wrote %s MiB, past its disk of %s MiB: stopping it",
                    vm.engine_name, used_mb, vm.disk_mb)
        op = vm_stop_for_disk(vm=vm, used_mb=used_mb)
        if op is not None:
            stopped.append(op)
    return stopped


def watch_all() -> str:
    """Every watched node (the schedule's task); one that cannot be asked is logged and
    the others still watched."""
    said = []
    for node_id in watched_nodes():
        try:
            ops = watch_node(node_id)
        except Exception:
            log.exception("the disk watchdog could not read node %s", node_id)
            said.append(f"node {node_id}: unreadable")
            continue
        if ops:
            said.append(f"node {node_id}: stopped {len(ops)}")
    return "; ".join(said) or "nothing past its disk"
