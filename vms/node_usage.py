"""What each node's live VMs hold: the counters placement reads, and the count they keep.

`NodeUsage` (one row per node) is kept by the database: triggers change it in the
statement that changes a VM, a port, a snapshot or a warm pool
(vms/migrations/0011_node_usage.py), so it moves in the same transaction as what it
counts, whoever writes it. Placement reads those rows under its lock (vms/placement.py)
instead of summing 10,000 VMs and 20,000 ports per request.

`counted()` is the rule itself, summed from scratch (the grouped queries placement ran
before): the reconcile pass compares it with the counters and `repair()` corrects a node
that drifted (a trigger lost to a table rebuilt on SQLite, a row edited by hand), with a
warning in the log naming the node and what changed.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Count, Q, Sum

from nodes.models import Node
from vms.models import NodeUsage, PortMapping, Snapshot, Vm, WarmPool, live_vms

log = logging.getLogger(__name__)

COUNTERS = NodeUsage.COUNTERS
Counts = dict[str, int]


def saves_memory() -> Q:
    """The VMs whose memory is saved on their node's disk: suspended (or being suspended),
    but not the spares of pools that keep them paused in memory. The pools as a subquery,
    not a join: the sum stays a scan of the VMs alone."""
    saved_pools = WarmPool.objects.filter(keep=WarmPool.Keep.SAVED).values("pk")
    return (Q(status__in=[Vm.Status.SUSPENDING, Vm.Status.SUSPENDED])
            & (Q(warm_pool__isnull=True) | Q(warm_pool_id__in=saved_pools)))


def asleep() -> Q:
    """The VMs of a sleeping Env, saved: they hold no vCPU nor memory of their node
    (envs/sleep.py; the rule of vms/migrations/0014_sleeping_vms.py)."""
    return Q(asleep_at__isnull=False, status=Vm.Status.SUSPENDED)


def counted(node_ids: list[int] | None = None) -> dict[int, Counts]:
    """node id -> what its live VMs hold, summed from scratch (three grouped queries):
    the rule the counters keep. Nodes holding nothing are left out."""
    vms = Vm.objects.filter(live_vms(""))
    ports = PortMapping.objects.all()  # a destroyed VM's ports are deleted with it
    snapshots = Snapshot.objects.filter(live_vms("vm"))
    if node_ids is not None:
        vms, ports = vms.filter(node_id__in=node_ids), ports.filter(node_id__in=node_ids)
        snapshots = snapshots.filter(vm__node_id__in=node_ids)
    out: dict[int, Counts] = {}

    def of(node_id: int) -> Counts:
        return out.setdefault(node_id, dict.fromkeys(COUNTERS, 0))

    held = ~asleep()
    for row in vms.values("node_id").annotate(n=Count("id"), cpu=Sum("cpu_num", filter=held),
                                              mem=Sum("mem_mb", filter=held),
                                              disk=Sum("disk_mb"),
                                              saved=Sum("mem_mb", filter=saves_memory())).order_by():
        of(row["node_id"]).update(vms=row["n"], cpu=row["cpu"] or 0, mem_mb=row["mem"] or 0,
                                  disk_mb=row["disk"] or 0, saved_mb=row["saved"] or 0)
    for row in ports.values("node_id", "protocol").annotate(n=Count("id")).order_by():
        of(row["node_id"])[f"{row['protocol']}_ports"] = row["n"]
    for row in snapshots.values("vm__node_id").annotate(disk=Sum("vm__disk_mb")).order_by():
        of(row["vm__node_id"])["snapshots_mb"] = row["disk"] or 0
    return out


def kept(node_ids: list[int] | None = None) -> dict[int, Counts]:
    """node id -> its counters as stored."""
    rows = NodeUsage.objects.all() if node_ids is None else NodeUsage.objects.filter(node_id__in=node_ids)
    return {row["node_id"]: {k: row[k] for k in COUNTERS} for row in rows.values("node_id", *COUNTERS)}


def drift(node_ids: list[int] | None = None) -> dict[int, tuple[Counts | None, Counts]]:
    """node id -> (its counters, or None without a row; the true counts) where they differ."""
    nodes = Node.objects.all() if node_ids is None else Node.objects.filter(pk__in=node_ids)
    ids = list(nodes.values_list("pk", flat=True))
    true, stored = counted(ids), kept(ids)
    zero = dict.fromkeys(COUNTERS, 0)
    return {pk: (stored.get(pk), true.get(pk, zero)) for pk in ids
            if stored.get(pk) != true.get(pk, zero)}


def repair() -> list[str]:
    """Correct every node whose counters differ from counted(); returns what was corrected,
    each also logged as a warning.

    Read without a lock first (drift is rare, and most passes change nothing); each node
    that differs is then locked, counted again and corrected in one short transaction.
    The lock is its counter row's: a transaction whose trigger is about to change that row
    waits for the correction, and its own change lands on top of it; one that changed it
    already is waited for, and counted."""
    fixed = []
    suspects = drift()
    names = dict(Node.objects.filter(pk__in=list(suspects)).values_list("pk", "name"))
    for node_id in suspects:
        with transaction.atomic():
            NodeUsage.objects.get_or_create(node_id=node_id)
            row = NodeUsage.objects.select_for_update().get(node_id=node_id)
            found = drift([node_id]).get(node_id)  # counted again, under the lock
            if found is None:
                continue
            _, true = found
            was = {k: getattr(row, k) for k in COUNTERS}
            NodeUsage.objects.filter(node_id=node_id).update(**true)
        changes = ", ".join(f"{k} {was[k]} -> {true[k]}" for k in COUNTERS if was[k] != true[k])
        how = "had no row, made" if suspects[node_id][0] is None else "had drifted, corrected"
        said = f"node {names.get(node_id, node_id)}: its use counters {how}: {changes or 'all 0'}"
        log.warning("%s", said)
        fixed.append(said)
    return fixed
