"""The VM status machine: which actions are legal from which status.

A VM is claimed for an action by a conditional UPDATE (status IN allowed ->
transient status), so two concurrent requests can never both win, and no lock
is held while the engine works.
"""

from __future__ import annotations

import enum

from ttportal.errors import IllegalState
from vms.models import Vm


class VmAction(enum.StrEnum):
    """What a VM can be claimed for. The values are the words of the permission names
    (`vm_start`...) and of the portal's buttons."""

    START = "start"
    STOP = "stop"
    SUSPEND = "suspend"
    SNAPSHOT = "snapshot"
    APPLY = "apply"
    DESTROY = "destroy"
    NETWORK = "network"


# action -> (statuses it may start from, status while it runs)
TRANSITIONS: dict[VmAction, tuple[frozenset[str], str]] = {
    # Starting a suspended VM resumes it from its saved memory.
    VmAction.START: (frozenset({Vm.Status.STOPPED, Vm.Status.SUSPENDED, Vm.Status.ERROR}),
                     Vm.Status.STARTING),
    # A suspended VM is resumed or destroyed, never shut down: it is not running.
    VmAction.STOP: (frozenset({Vm.Status.RUNNING, Vm.Status.ERROR}), Vm.Status.STOPPING),
    VmAction.SUSPEND: (frozenset({Vm.Status.RUNNING}), Vm.Status.SUSPENDING),
    # A suspended VM's snapshot is of its disk, and it stays suspended; applying one
    # to a suspended VM discards its saved memory (it belongs to the disk reverted).
    VmAction.SNAPSHOT: (frozenset({Vm.Status.STOPPED, Vm.Status.RUNNING, Vm.Status.SUSPENDED}),
                        Vm.Status.SNAPSHOTTING),
    VmAction.APPLY: (frozenset({Vm.Status.STOPPED, Vm.Status.RUNNING, Vm.Status.SUSPENDED}),
                     Vm.Status.RESTORING),
    VmAction.DESTROY: (frozenset({Vm.Status.STOPPED, Vm.Status.RUNNING, Vm.Status.SUSPENDED,
                                  Vm.Status.ERROR}), Vm.Status.DESTROYING),
    # Network changes run beside the VM's power state, so they keep it; they
    # claim `net_busy` instead (see claim_network).
    VmAction.NETWORK: (frozenset({Vm.Status.STOPPED, Vm.Status.RUNNING, Vm.Status.STARTING,
                                  Vm.Status.STOPPING, Vm.Status.SUSPENDED, Vm.Status.SUSPENDING}), ""),
}

STABLE = frozenset({Vm.Status.STOPPED, Vm.Status.RUNNING, Vm.Status.SUSPENDED})
# What a VM is in only while an operation holds it.
TRANSIENT = frozenset({Vm.Status.CREATING, Vm.Status.STARTING, Vm.Status.STOPPING, Vm.Status.SUSPENDING,
                       Vm.Status.SNAPSHOTTING, Vm.Status.RESTORING, Vm.Status.DESTROYING})


def claim(vm: Vm, action: VmAction) -> str:
    """Move `vm` into the action's transient status or raise IllegalState. Returns the old status."""
    allowed, transient = TRANSITIONS[action]
    if transient:
        # The status as stored (the caller's copy may be stale), then an UPDATE
        # conditional on exactly it: the status returned is the one it left.
        vm.refresh_from_db(fields=["status"])
        old = vm.status
        if old not in allowed or not Vm.objects.filter(pk=vm.pk, status=old).update(status=transient):
            vm.refresh_from_db(fields=["status"])
            raise _illegal(vm, action, allowed)
        vm.status = transient
        return old
    vm.refresh_from_db(fields=["status"])
    if vm.status not in allowed:
        raise _illegal(vm, action, allowed)
    return vm.status


def claim_network(vm: Vm) -> None:
    """Claim the VM's network for one change: the node applies changes as differences
    from what is installed, so two overlapping ones could leave it out of step."""
    allowed = TRANSITIONS[VmAction.NETWORK][0]
    if not Vm.objects.filter(pk=vm.pk, status__in=allowed, net_busy=False).update(net_busy=True):
        vm.refresh_from_db(fields=["status", "net_busy"])
        if vm.net_busy:
            raise IllegalState(f"a network change of VM {vm.name} is still being applied; retry shortly")
        raise _illegal(vm, "change the network of", allowed)
    vm.net_busy = True


def release_network(vm_ids) -> None:
    Vm.objects.filter(pk__in=list(vm_ids)).update(net_busy=False)


def _illegal(vm: Vm, action: str, allowed: frozenset[str]) -> IllegalState:
    return IllegalState(
        f"cannot {action} VM {vm.name} while it is {vm.status} "
        f"(allowed from: {', '.join(sorted(allowed))})"
    )


def allowed(status: str, action: VmAction) -> bool:
    return status in TRANSITIONS[action][0]


def can(vm: Vm, action: VmAction) -> bool:
    return allowed(vm.status, action)
