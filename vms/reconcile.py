"""Periodic reconciliation: compare what each node really holds with the database.

The database is the source of truth. Each pass, per node:
- settles whatever is left in a transitional state with no live operation
  (VMs, snapshots, network claims; Envs left destroying), as a failed
  operation's settle would;
- records each running/stopped VM's real power state (a vanished one becomes
  error, its row and ports kept);
- rewrites the firewall's elements from the database in one atomic step;
- makes the node's DHCP reservations those of its live VMs;
- reports domains and images named like ours that no live VM owns (an
  Operation of kind node_drift), and removes them once they have been
  reported for TT_DRIFT_GRACE seconds.
And once per pass, for every node: the use counters placement reads (NodeUsage) are
compared with a count from scratch and corrected where they drifted, with a warning in
the log (vms/node_usage.py).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import recording as audit
from engines.specs import PowerState
from nodes.models import Node
from nodes.registry import get_engine
from operations.models import Operation
from operations.recording import record
from ttportal.errors import ErrorCode, TTError
from ttportal.permissions import check_staff
from vms import disk_bases, node_usage, state
from vms import steps as vm_steps
from vms.kinds import VmKind
from vms.models import Snapshot, Vm, env_model, specs_of

log = logging.getLogger(__name__)

_POWER_TO_STATUS = {PowerState.RUNNING: Vm.Status.RUNNING, PowerState.STOPPED: Vm.Status.STOPPED,
                    PowerState.SUSPENDED: Vm.Status.SUSPENDED}


def reconcile_nodes() -> int:
    """All enabled nodes; returns how many things were found drifted."""
    drifted = settle_abandoned_envs()
    try:
        drifted += len(node_usage.repair())
    except Exception:  # the engines' reconciliation below must still run
        log.exception("checking the nodes' use counters failed")
    for node_id in Node.objects.filter(enabled=True).values_list("pk", flat=True):
        try:
            drifted += reconcile_node(node_id)
        except Exception:  # one unreachable node must not stop the others
            log.exception("reconciling node %s failed", node_id)
    return drifted


def reconcile_node(node_id: int) -> int:
    node = Node.objects.get(pk=node_id)
    engine = get_engine(node)
    drifted = settle_abandoned(node)
    vms = Vm.objects.filter(node=node, status__in=[Vm.Status.RUNNING, Vm.Status.STOPPED]).for_specs()
    for vm in vms:
        drifted += vm_reconcile_one(vm, engine)
    # Firewall: rewrite every element from the database in one atomic step.
    live = Vm.objects.live().filter(node=node).exclude(status=Vm.Status.CREATING)
    engine.firewall.rebuild(specs_of(live.for_specs()))
    inventory = engine.inventory(f"tt-{node.name}-")
    drifted += reconcile_reservations(node, engine, inventory)
    drifted += reconcile_orphans(node, engine, inventory)
    drifted += _release_bases(node)
    tidy_parked(node, engine)
    return drifted


@audit.audited("node.reconcile", on="node", atomic=False,
               detail=lambda kwargs, result: {} if result is None else {"drifted": result})
def node_reconcile(*, node: Node, by) -> int:
    """An operator reconciles `node` now (the admin's action); how many things had drifted.
    Its event says ok with that count, or failed (an unreachable node); what was settled
    has its own events, as in the schedule's pass."""
    check_staff(by, "node_reconcile")
    return reconcile_node(node.pk)


def tidy_parked(node: Node, engine) -> None:
    """Restores prepared ahead (engines/libvirt/parking.py) follow the database: those of VMs
    no longer suspended end, suspended VMs not parked (libvirtd restarted) are parked again."""
    rows = Vm.objects.live().filter(node=node).exclude(status=Vm.Status.CREATING)
    suspended = {vm.engine_name for vm in rows.filter(status=Vm.Status.SUSPENDED).select_related("node")}
    busy = {vm.engine_name for vm in rows.filter(status__in=state.TRANSIENT).select_related("node")}
    try:
        for said in engine.tidy_parked(f"tt-{node.name}-", suspended, busy):
            log.info("reconcile: node %s: %s", node.name, said)
    except Exception:  # the rest of the pass is done; the next one tries again
        log.exception("reconcile: tidying the parked restores of node %s failed", node.name)


def _release_bases(node: Node) -> int:
    """Disk bases whose last user went while their node could not remove them."""
    removed = disk_bases.release_unused(node.pk)
    for path in removed:
        log.warning("reconcile: removed the disk base %s of node %s: no VM uses it", path, node.name)
    return len(removed)


def vm_reconcile_one(vm: Vm, engine) -> int:
    """Record the VM's real power state; returns 1 if it had drifted."""
    power = engine.power_state(vm.to_spec())
    real = _POWER_TO_STATUS.get(power, Vm.Status.ERROR)
    if real == vm.status:
        return 0
    with transaction.atomic():
        # Only if nobody claimed the VM meanwhile: an operation in flight is not drift.
        if not Vm.objects.filter(pk=vm.pk, status=vm.status).update(status=real):
            return 0
        error = None
        if power == PowerState.MISSING:
            error = TTError(
                f"{vm.engine_name} is missing on node {vm.node.name}; marked error, nothing deleted",
                code=ErrorCode.DRIFT,
            )
        record(VmKind.VM_RECONCILE, env=vm.env, vm=vm, by=None, run=False, error=error,
               status=Operation.Status.FAILED if error else Operation.Status.SUCCEEDED,
               params={"was": vm.status, "now": real})
        audit.record("vm.reconcile", on=vm, detail={"was": vm.status, "now": real})  # by the system
    log.warning("VM %s drifted: database said %s, node reports %s", vm, vm.status, power)
    return 1


# --- left transitional with no operation ------------------------------------------------


def _held(live_ops) -> tuple[set[int], set[int], set[int]]:
    """VM, snapshot and Env ids that live operations hold."""
    vms, snapshots, envs = set(), set(), set()
    for op in live_ops:
        vms |= op.vm_ids
        if op.snapshot_id:
            snapshots.add(op.snapshot_id)
        if op.env_id:
            envs.add(op.env_id)
    return vms, snapshots, envs


def settle_abandoned(node: Node) -> int:
    """Settle what is transitional on this node with no live operation holding it.

    Read the candidates first and the live operations second: an operation that
    claims something after the first read is not in it, and one that started
    before is seen live.
    """
    vms = list(Vm.objects.filter(node=node).filter(status__in=state.TRANSIENT)
               .for_specs())
    busy_net = list(Vm.objects.filter(node=node, net_busy=True).for_specs())
    snapshots = list(Snapshot.objects.filter(vm__node=node).exclude(status=Snapshot.Status.READY)
                     .select_related("vm__env", "vm__template", "vm__node"))
    held_vms, held_snapshots, _ = _held(Operation.objects.filter(status__in=Operation.LIVE))
    settled = 0
    for snapshot in snapshots:
        if snapshot.pk not in held_snapshots:
            settled += _settle_snapshot(snapshot)
    for vm in vms:
        if vm.pk not in held_vms:
            settled += _settle_vm(vm)
    for vm in busy_net:
        if vm.pk not in held_vms:
            vm_steps.resync_network(vm)
            state.release_network([vm.pk])
            settled += _report(vm, f"network change of {vm.name} left unfinished; rewritten from the DB")
    return settled


def _settle_vm(vm: Vm) -> int:
    was = vm.status
    if was == Vm.Status.CREATING:
        vm_steps.roll_back_creation(vm)
    else:
        vm_steps.settle_vm(vm, was)
    vm.refresh_from_db(fields=["status"])
    if vm.status == was:
        return 0
    return _report(vm, f"{vm.name} was left {was} with no operation; now {vm.status}", was=was)


def _settle_snapshot(snapshot: Snapshot) -> int:
    if snapshot.status == Snapshot.Status.CREATING:
        if not vm_steps.remove_half_made(snapshot):
            return 0  # the next pass tries again
        Snapshot.objects.filter(pk=snapshot.pk, status=Snapshot.Status.CREATING).delete()
        what = "removed"
    else:
        Snapshot.objects.filter(pk=snapshot.pk, status=snapshot.status).update(status=Snapshot.Status.READY)
        what = "ready again"
    message = f"snapshot {snapshot.name} was left {snapshot.status} with no operation; {what}"
    return _report(snapshot.vm, message)


def settle_abandoned_envs() -> int:
    """An Env left destroying with no live operation goes back to active (to be destroyed again)."""
    model = env_model()  # envs.Env, through Vm.env: envs sits above vms
    destroying = list(model.objects.filter(status=model.Status.DESTROYING).values_list("pk", flat=True))
    _, _, held_envs = _held(Operation.objects.filter(status__in=Operation.LIVE))
    stale = [pk for pk in destroying if pk not in held_envs]
    stale_rows = model.objects.filter(pk__in=stale, status=model.Status.DESTROYING)
    return stale_rows.update(status=model.Status.ACTIVE)


def _report(vm: Vm, message: str, **params) -> int:
    log.warning("reconcile: %s", message)
    record(VmKind.VM_RECONCILE, env=vm.env, vm=vm, by=None, run=False, status=Operation.Status.SUCCEEDED,
           params={"settled": message, **params})
    audit.record("vm.reconcile", on=vm, detail={"settled": message[:300]})  # by the system (its schedule)
    return 1


# --- DHCP reservations ---------------------------------------------------------------------


def reconcile_reservations(node: Node, engine, inventory) -> int:
    """The node hands out exactly the addresses of its live VMs.

    A VM being created or destroyed adds or removes its own: only running and
    stopped VMs' missing ones are added back, and only MACs no live VM has are
    removed.
    """
    have = inventory.reservations
    if have is None:  # the engine gives each VM its address itself: nothing to keep
        return 0
    live = {vm.mac: vm for vm in Vm.objects.live().filter(node=node).exclude(mac=None)}
    repaired = []
    for mac, ip in have.items():
        if mac not in live:
            engine.set_reservation(mac, ip, "", present=False)
            repaired.append(f"removed {mac} -> {ip}")
    for mac, vm in live.items():
        if vm.status in state.STABLE and have.get(mac) != vm.ip:
            engine.set_reservation(mac, vm.ip, vm.engine_name, present=True)
            repaired.append(f"added {mac} -> {vm.ip}")
    if not repaired:
        return 0
    message = f"DHCP reservations on node {node.name}: " + "; ".join(repaired)
    log.warning("reconcile: %s", message)
    record(VmKind.NODE_DRIFT, env=None, by=None, run=False, status=Operation.Status.SUCCEEDED,
           target=f"{node.name}: DHCP", params={"node": node.name, "repaired": repaired})
    return len(repaired)


# --- domains and images no VM owns ------------------------------------------------------------


def _vm_id(name: str, prefix: str) -> int | None:
    rest = name.removeprefix(prefix)
    return int(rest) if name.startswith(prefix) and rest.isdigit() else None


def reconcile_orphans(node: Node, engine, inventory) -> int:
    prefix = f"tt-{node.name}-"
    found = [("domain", name, name) for name in inventory.instances]
    found += [("image", image, owner) for image, owner in inventory.images.items()]
    bases = disk_bases.volumes_of(node.pk)  # a clone's base outlives the VM it was cut from
    found = [entry for entry in found if not (entry[0] == "image" and entry[1] in bases)]
    ids = {_vm_id(owner, prefix) for _, _, owner in found} - {None}
    rows = {vm.pk: vm for vm in Vm.objects.filter(node=node, pk__in=ids).select_related("env")}
    drifted = 0
    for kind, name, owner in found:
        vm_id = _vm_id(owner, prefix)
        if vm_id is None:
            continue  # another node's name that shares our prefix
        vm = rows.get(vm_id)
        if vm is not None and (vm.status != Vm.Status.DESTROYED or (kind == "image" and vm.keep_image)):
            continue  # owned (a destroyed VM may keep its image on purpose)
        drifted += _orphan(node, engine, kind, name, vm)
    return drifted


def _orphan(node: Node, engine, kind: str, name: str, vm: Vm | None) -> int:
    target = f"{node.name}: {kind} {name}"
    drift = Operation.objects.filter(kind=VmKind.NODE_DRIFT, target=target)
    last = drift.order_by("-created_at", "-pk").first()
    now = timezone.now()
    grace = timedelta(seconds=settings.TT_DRIFT_GRACE)
    env = vm.env if vm is not None else None
    if last is None or last.params.get("action") == "removed":
        error = TTError(
            f"{kind} {name} on node {node.name} belongs to no live VM; it is removed after "
            f"TT_DRIFT_GRACE ({settings.TT_DRIFT_GRACE} s) unless a VM claims it", code=ErrorCode.DRIFT,
        )
        record(VmKind.NODE_DRIFT, env=env, vm=vm, by=None, run=False, status=Operation.Status.FAILED,
               error=error, target=target,
               params={"node": node.name, "object": kind, "name": name, "action": "found"})
        log.warning("reconcile: %s", error)
        return 1
    if now - last.created_at < grace:
        return 0
    if Vm.objects.live().filter(pk=vm.pk if vm else None).exists():
        return 0  # claimed meanwhile
    (engine.remove_instance if kind == "domain" else engine.remove_image)(name)
    audit.record("node.drift_remove", on=audit.Ref("node", str(node.pk), node.name),
                 detail={"object": kind, "name": name})
    record(VmKind.NODE_DRIFT, env=env, vm=vm, by=None, run=False, status=Operation.Status.SUCCEEDED,
           target=target, params={"node": node.name, "object": kind, "name": name, "action": "removed"})
    log.warning("reconcile: removed %s %s from node %s after its grace period", kind, name, node.name)
    return 1
