"""Periodic reconciliation: compare what each node really runs with the database.

The database is the source of truth: drift is reported as an Operation on the
VM's Env and repaired where that is safe (power state recorded as it really
is, firewall elements rewritten from the database); nothing is ever deleted.
"""

from __future__ import annotations

import logging

from django.db import transaction

from engines.models import Node
from engines.registry import get_engine
from engines.specs import PowerState
from envs.models import Operation
from envs.operations import record
from ttportal.errors import ErrorCode, TTError
from vms.models import Vm

log = logging.getLogger(__name__)
K = Operation.Kind
S = Vm.Status

_POWER_TO_STATUS = {PowerState.RUNNING: S.RUNNING, PowerState.STOPPED: S.STOPPED}


def reconcile_nodes() -> int:
    """All enabled nodes; returns how many VMs were found drifted."""
    drifted = 0
    for node_id in Node.objects.filter(enabled=True).values_list("pk", flat=True):
        try:
            drifted += reconcile_node(node_id)
        except Exception:  # one unreachable node must not stop the others
            log.exception("reconciling node %s failed", node_id)
    return drifted


def reconcile_node(node_id: int) -> int:
    node = Node.objects.get(pk=node_id)
    engine = get_engine(node)
    drifted = 0
    vms = Vm.objects.filter(node=node, status__in=[S.RUNNING, S.STOPPED]).select_related(
        "env", "template", "node"
    )
    for vm in vms:
        drifted += vm_reconcile_one(vm, engine)
    # Firewall: rewrite every element from the database in one atomic step.
    live = Vm.objects.live().filter(node=node).exclude(status=S.CREATING)
    specs = [vm.to_spec() for vm in live.select_related("env", "template", "node")
             .prefetch_related("port_mappings")]
    engine.firewall.rebuild(specs)
    return drifted


def vm_reconcile_one(vm: Vm, engine) -> int:
    """Record the VM's real power state; returns 1 if it had drifted."""
    power = engine.power_state(vm.to_spec())
    real = _POWER_TO_STATUS.get(power, S.ERROR)
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
        record(K.VM_RECONCILE, env=vm.env, vm=vm, by=None, run=False, error=error,
               status=Operation.Status.FAILED if error else Operation.Status.SUCCEEDED,
               params={"was": vm.status, "now": real})
    log.warning("VM %s drifted: database said %s, node reports %s", vm, vm.status, power)
    return 1
